//! A list whose items resolve synchronously inside an async execution.
//!
//! Juniper's async executor resolves every field of every list item as its own boxed future,
//! even when the resolver is a plain accessor; on a page of 100 messages that bookkeeping was
//! most of a request's cost. [`SyncList`] is a GraphQL list exactly like `Vec<T>` (same type in
//! the schema, same result), resolved with the synchronous executor in one step.
//!
//! Only for item types whose whole selection is synchronous: a sync resolution of an `async fn`
//! field would fail.

use juniper::{
    ArcStr, BoxFuture, ExecutionResult, Executor, GraphQLType, GraphQLValue, GraphQLValueAsync, Registry,
    ScalarValue, Selection, Value,
    macros::reflect::{BaseSubTypes, BaseType, Type, Types, WrappedType},
    marker::IsOutputType,
    meta::MetaType,
};

/// Items that may answer a whole list in one pass when the selection allows it.
pub trait ResolvePlain<S>: GraphQLValue<S> + Sized
where
    S: ScalarValue,
{
    /// The list's value, or `None` to resolve it item by item through the executor.
    fn resolve_plain(
        items: &[Self],
        selection_set: Option<&[Selection<'_, S>]>,
        executor: &Executor<'_, '_, Self::Context, S>,
    ) -> Option<Value<S>>;
}

/// A GraphQL list of `T`, resolved synchronously (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct SyncList<T>(pub Vec<T>);

impl<T> From<Vec<T>> for SyncList<T> {
    fn from(items: Vec<T>) -> Self {
        Self(items)
    }
}

impl<S, T> GraphQLType<S> for SyncList<T>
where
    T: GraphQLType<S> + ResolvePlain<S>,
    S: ScalarValue,
{
    fn name(_: &Self::TypeInfo) -> Option<ArcStr> {
        None
    }

    fn meta(info: &Self::TypeInfo, registry: &mut Registry<S>) -> MetaType<S> {
        <Vec<T> as GraphQLType<S>>::meta(info, registry)
    }
}

impl<S, T> GraphQLValue<S> for SyncList<T>
where
    T: ResolvePlain<S>,
    S: ScalarValue,
{
    type Context = T::Context;
    type TypeInfo = T::TypeInfo;

    fn type_name(&self, _: &Self::TypeInfo) -> Option<ArcStr> {
        None
    }

    fn resolve(
        &self,
        info: &Self::TypeInfo,
        selection_set: Option<&[Selection<S>]>,
        executor: &Executor<Self::Context, S>,
    ) -> ExecutionResult<S> {
        if let Some(value) = T::resolve_plain(&self.0, selection_set, executor) {
            return Ok(value);
        }
        self.0.resolve(info, selection_set, executor)
    }
}

impl<S, T> GraphQLValueAsync<S> for SyncList<T>
where
    T: ResolvePlain<S> + Sync,
    T::TypeInfo: Sync,
    T::Context: Sync,
    S: ScalarValue + Send + Sync,
{
    fn resolve_async<'a>(
        &'a self,
        info: &'a Self::TypeInfo,
        selection_set: Option<&'a [Selection<S>]>,
        executor: &'a Executor<Self::Context, S>,
    ) -> BoxFuture<'a, ExecutionResult<S>> {
        let result = GraphQLValue::resolve(self, info, selection_set, executor);
        Box::pin(std::future::ready(result))
    }
}

impl<S, T> IsOutputType<S> for SyncList<T>
where
    T: IsOutputType<S> + ResolvePlain<S>,
    S: ScalarValue,
{
    fn mark() {
        T::mark();
    }
}

impl<S, T: BaseType<S>> BaseType<S> for SyncList<T> {
    const NAME: Type = T::NAME;
}

impl<S, T: BaseSubTypes<S>> BaseSubTypes<S> for SyncList<T> {
    const NAMES: Types = T::NAMES;
}

impl<S, T: WrappedType<S>> WrappedType<S> for SyncList<T> {
    const VALUE: u128 = <Vec<T> as WrappedType<S>>::VALUE;
}
