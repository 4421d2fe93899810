//! The root types as the schema executes them: every root field is charged what it asks for
//! (the items of every connection and list below it, and the searches it runs, against
//! [`crate::Limits`]) before its resolver runs, so that no root field, present or added later,
//! escapes the cost limits.
//!
//! A mutation's root fields change things and run one after another: they are charged all
//! together before the first runs, so that a document over the limits runs none. Juniper
//! resolves a query's root fields itself (after `__schema` and `__type`) and gives no hook
//! before the first: each is charged before it runs, so that a refused field reads nothing and
//! what a request reads stays within the limits.

use juniper::{
    ArcStr, Arguments, BoxFuture, DefaultScalarValue, ExecutionResult, Executor, GraphQLType, GraphQLValue,
    GraphQLValueAsync, IntoFieldError as _, Registry, Selection, meta::MetaType,
};

use crate::{Context, Result, cost};

/// The root type `T`, charged before it resolves (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Charged<T>(pub T);

type Exec<'r, 'a> = Executor<'r, 'a, Context, DefaultScalarValue>;

/// Charges the root field `executor` resolves.
fn charge_field(executor: &Exec<'_, '_>) -> Result<()> {
    let context = executor.context();
    context.charge(cost::of_root_field(&executor.look_ahead(), &context.services().limits))
}

/// Charges every root field of `selections` at once.
fn charge_operation(executor: &Exec<'_, '_>, selections: &[Selection<'_, DefaultScalarValue>]) -> Result<()> {
    let context = executor.context();
    context.charge(operation_cost(executor, selections, &context.services().limits))
}

/// What the root fields of `selections` ask for, fragments expanded; a field skipped by a
/// directive is charged all the same.
fn operation_cost(
    executor: &Exec<'_, '_>,
    selections: &[Selection<'_, DefaultScalarValue>],
    limits: &crate::Limits,
) -> cost::Cost {
    let mut total = cost::Cost::default();
    for selection in selections {
        let part = match selection {
            Selection::Field(field) if field.item.name.item.starts_with("__") => cost::Cost::default(),
            Selection::Field(field) => {
                // The sub-executor Juniper would resolve the field with: its look-ahead.
                let f = &field.item;
                let response_name = f.alias.as_ref().unwrap_or(&f.name).item;
                let sub = executor.field_sub_executor(
                    response_name,
                    f.name.item,
                    field.span.start,
                    f.selection_set.as_deref(),
                );
                cost::of_root_field(&sub.look_ahead(), limits)
            }
            Selection::FragmentSpread(spread) => match executor.fragment_by_name(spread.item.name.item) {
                Some(fragment) => {
                    let set = &fragment.selection_set[..];
                    let sub = executor.type_sub_executor(Some(fragment.type_condition.item), Some(set));
                    operation_cost(&sub, set, limits)
                }
                None => cost::Cost::default(),
            },
            Selection::InlineFragment(inline) => {
                let set = &inline.item.selection_set[..];
                let condition = inline.item.type_condition.as_ref().map(|c| c.item);
                let sub = executor.type_sub_executor(condition, Some(set));
                operation_cost(&sub, set, limits)
            }
        };
        total = total.plus(part);
    }
    total
}

impl<T> GraphQLType for Charged<T>
where
    T: GraphQLType<Context = Context>,
{
    fn name(info: &Self::TypeInfo) -> Option<ArcStr> {
        T::name(info)
    }

    fn meta(
        info: &Self::TypeInfo,
        registry: &mut Registry<DefaultScalarValue>,
    ) -> MetaType<DefaultScalarValue> {
        T::meta(info, registry)
    }
}

impl<T> GraphQLValue for Charged<T>
where
    T: GraphQLValue<Context = Context>,
{
    type Context = Context;
    type TypeInfo = T::TypeInfo;

    fn type_name(&self, info: &Self::TypeInfo) -> Option<ArcStr> {
        self.0.type_name(info)
    }

    fn concrete_type_name(&self, context: &Context, info: &Self::TypeInfo) -> String {
        self.0.concrete_type_name(context, info)
    }

    fn resolve_field(
        &self,
        info: &Self::TypeInfo,
        field_name: &str,
        arguments: &Arguments<DefaultScalarValue>,
        executor: &Exec<'_, '_>,
    ) -> ExecutionResult {
        charge_field(executor).map_err(|e| e.into_field_error())?;
        self.0.resolve_field(info, field_name, arguments, executor)
    }

    fn resolve(
        &self,
        info: &Self::TypeInfo,
        selection_set: Option<&[Selection<'_, DefaultScalarValue>]>,
        executor: &Exec<'_, '_>,
    ) -> ExecutionResult {
        if let Some(selections) = selection_set {
            charge_operation(executor, selections).map_err(|e| e.into_field_error())?;
        }
        self.0.resolve(info, selection_set, executor)
    }
}

impl<T> GraphQLValueAsync for Charged<T>
where
    T: GraphQLValueAsync<Context = Context>,
    T::TypeInfo: Sync,
{
    fn resolve_field_async<'a>(
        &'a self,
        info: &'a Self::TypeInfo,
        field_name: &'a str,
        arguments: &'a Arguments<DefaultScalarValue>,
        executor: &'a Exec<'_, '_>,
    ) -> BoxFuture<'a, ExecutionResult> {
        match charge_field(executor) {
            Ok(()) => self.0.resolve_field_async(info, field_name, arguments, executor),
            Err(e) => Box::pin(std::future::ready(Err(e.into_field_error()))),
        }
    }

    fn resolve_async<'a>(
        &'a self,
        info: &'a Self::TypeInfo,
        selection_set: Option<&'a [Selection<'_, DefaultScalarValue>]>,
        executor: &'a Exec<'_, '_>,
    ) -> BoxFuture<'a, ExecutionResult> {
        if let Some(selections) = selection_set
            && let Err(e) = charge_operation(executor, selections)
        {
            return Box::pin(std::future::ready(Err(e.into_field_error())));
        }
        self.0.resolve_async(info, selection_set, executor)
    }
}
