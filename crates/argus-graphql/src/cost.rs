//! What a document asks for, computed from the look-ahead of a root field before anything is
//! read or run: the items it may return and the searches it runs ([`Cost`]).
//!
//! One walk charges every selected field wherever it is, under a query or a mutation payload:
//! - a paged field (one that takes `first`: a connection, the watch list) costs its page size
//!   times one plus what each item asks for below its `edges` or `nodes`;
//! - any other list field costs its longest length times what each element asks for, plus one
//!   per element when the elements are records read from the store (`versions`);
//! - any other field costs what its children cost, and a root field one more;
//! - a search (`tchapSearch`) ranks up to [`argus_store::RANK_WINDOW`] matches whatever its page: besides
//!   its page, it counts against the searches a request may run.
//!
//! So `tchapRooms(first: 500) { edges { node { messages(first: 500) … } } }` costs 250,500, and
//! aliases add up. The tables below name every paged and list field of the schema; a test holds
//! them to it, so that a field added later cannot escape its charge.

use argus_ingest::ingest::MAX_UPGRADES_FOLLOWED;
use argus_matrix::MAX_JOINED_ROOMS;
use argus_store::MAX_VERSIONS_READ;
use juniper::{LookAheadSelection, LookAheadValue, ScalarValue};

use crate::Limits;

/// What a document, or a part of it, asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Items it may return: rooms, messages, versions, audit records, watches, search results.
    pub(crate) items: u64,
    /// Searches it runs, each ranking up to [`argus_store::RANK_WINDOW`] matches.
    pub(crate) searches: u64,
}

impl Cost {
    /// `items` items and no search.
    const fn items(items: u64) -> Self {
        Self { items, searches: 0 }
    }

    /// Both together.
    pub(crate) fn plus(self, other: Self) -> Self {
        Self {
            items: self.items.saturating_add(other.items),
            searches: self.searches.saturating_add(other.searches),
        }
    }

    fn times(self, n: u64) -> Self {
        Self { items: self.items.saturating_mul(n), searches: self.searches.saturating_mul(n) }
    }
}

/// Every field that takes `first`, with its default in the schema.
const PAGED: [(&str, u32); 9] = [
    ("tchapRooms", 50),
    ("tchapMessages", 50),
    ("messages", 50),
    ("stateHistory", 20),
    ("tchapIngestions", 50),
    ("tchapWatches", 50),
    ("tchapSearch", 20),
    ("tchapAccessLog", 50),
    ("tchapAccountWatches", 50),
];

/// The lists of a paged field's type, as long as its page.
const PAGE_LISTS: [&str; 2] = ["edges", "nodes"];

/// Reasons an encrypted event stays undecryptable ([`argus_matrix::Undecryptable`]): the most
/// entries `undecryptable` lists.
const UNDECRYPTABLE_REASONS: u64 = argus_matrix::Undecryptable::ALL.len() as u64;

/// Every other list field of the schema: its longest length, and whether each element is a
/// record read from the store (an item), rather than a part of what a mutation did (charged
/// only for what it asks for in turn).
const LISTS: [(&str, u64, bool); 5] = [
    ("versions", MAX_VERSIONS_READ.unsigned_abs(), true),
    ("rooms", MAX_JOINED_ROOMS as u64, false),
    ("upgrades", MAX_UPGRADES_FOLLOWED as u64, false),
    ("undecryptable", UNDECRYPTABLE_REASONS, false),
    // The rooms of one access: at most those of a page of search results.
    ("roomIds", argus_domain::search::MAX_SEARCH_PAGE as u64, false),
];

/// Every field that runs a search.
const SEARCHES: [&str; 1] = ["tchapSearch"];

/// What the root field `field` asks for.
pub(crate) fn of_root_field<S: ScalarValue>(field: &LookAheadSelection<'_, S>, limits: &Limits) -> Cost {
    let cost = Walk { limits }.field(field);
    if paged_default(field.field_original_name()).is_some() { cost } else { cost.plus(Cost::items(1)) }
}

fn paged_default(name: &str) -> Option<u32> {
    PAGED.iter().find(|(paged, _)| *paged == name).map(|(_, first)| *first)
}

fn list_bound(name: &str) -> Option<(u64, bool)> {
    LISTS.iter().find(|(list, ..)| *list == name).map(|(_, length, records)| (*length, *records))
}

struct Walk<'l> {
    limits: &'l Limits,
}

impl Walk<'_> {
    fn field<S: ScalarValue>(&self, field: &LookAheadSelection<'_, S>) -> Cost {
        let name = field.field_original_name();
        let own = Cost { items: 0, searches: u64::from(SEARCHES.contains(&name)) };
        if let Some(default_first) = paged_default(name) {
            let page = self.page(field, default_first);
            let (mut per_item, mut per_page) = (Cost::default(), Cost::default());
            for child in field.children().iter() {
                if PAGE_LISTS.contains(&child.field_original_name()) {
                    per_item = per_item.plus(self.children(child));
                } else {
                    per_page = per_page.plus(self.field(child));
                }
            }
            return own.plus(Cost::items(1).plus(per_item).times(page)).plus(per_page);
        }
        if let Some((length, records)) = list_bound(name) {
            return own.plus(Cost::items(u64::from(records)).plus(self.children(field)).times(length));
        }
        own.plus(self.children(field))
    }

    fn children<S: ScalarValue>(&self, field: &LookAheadSelection<'_, S>) -> Cost {
        field.children().iter().map(|child| self.field(child)).fold(Cost::default(), Cost::plus)
    }

    /// The page size `first` asks for: given (a larger one than the resolver accepts counts as
    /// the largest it accepts: it is refused anyway), the schema's default when absent, the
    /// larger of the defaults when null (a variable left out takes the schema's default).
    fn page<S: ScalarValue>(&self, field: &LookAheadSelection<'_, S>, default_first: u32) -> u64 {
        let max = u64::from(self.limits.max_page_size);
        match field.argument("first").map(|a| a.value()) {
            None => u64::from(default_first),
            Some(LookAheadValue::Scalar(s)) => {
                s.try_to_int().map_or(max, |n| u64::try_from(n).unwrap_or(0)).min(max)
            }
            Some(_) => u64::from(default_first.max(self.limits.default_page_size)),
        }
    }
}

#[cfg(test)]
mod tests {
    use graphql_parser::schema::{Definition, Document, Type, TypeDefinition, parse_schema};

    use super::{LISTS, PAGE_LISTS, PAGED, SEARCHES, list_bound, paged_default};

    fn is_list(ty: &Type<'_, String>) -> bool {
        match ty {
            Type::ListType(_) => true,
            Type::NonNullType(inner) => is_list(inner),
            Type::NamedType(_) => false,
        }
    }

    fn innermost<'t>(ty: &'t Type<'_, String>) -> &'t str {
        match ty {
            Type::NamedType(name) => name,
            Type::ListType(inner) | Type::NonNullType(inner) => innermost(inner),
        }
    }

    /// Every field of every object type: (type, field, list?, default of `first` if it takes
    /// one, its innermost type).
    fn fields(document: &Document<'_, String>) -> Vec<(String, String, bool, Option<String>, String)> {
        let mut out = Vec::new();
        for definition in &document.definitions {
            if let Definition::TypeDefinition(TypeDefinition::Object(object)) = definition {
                for field in &object.fields {
                    let first = field
                        .arguments
                        .iter()
                        .find(|a| a.name == "first")
                        .map(|a| a.default_value.as_ref().map(ToString::to_string).unwrap_or_default());
                    out.push((
                        object.name.clone(),
                        field.name.clone(),
                        is_list(&field.field_type),
                        first,
                        innermost(&field.field_type).to_owned(),
                    ));
                }
            }
        }
        out
    }

    /// Each paged field of the schema is in `PAGED` with its default, each list of a paged
    /// field's type in `PAGE_LISTS`, every other list in `LISTS`; and each name of the tables
    /// means the same wherever the schema uses it.
    #[test]
    fn every_list_and_paged_field_of_the_schema_is_charged() {
        let sdl = crate::schema_sdl();
        let document = parse_schema::<String>(&sdl).unwrap_or_else(|e| panic!("{e}"));
        let fields = fields(&document);
        let paged_types: Vec<&str> = fields.iter().filter(|f| f.3.is_some()).map(|f| f.4.as_str()).collect();
        for (ty, name, list, first, _) in &fields {
            let field = format!("{ty}.{name}");
            match first {
                Some(default) => {
                    assert_eq!(paged_default(name).map(|d| d.to_string()).as_ref(), Some(default), "{field}");
                }
                None => assert_eq!(paged_default(name), None, "{field} is charged as paged"),
            }
            let page_list = *list && paged_types.contains(&ty.as_str());
            assert_eq!(PAGE_LISTS.contains(&name.as_str()), page_list, "{field}");
            assert_eq!(list_bound(name).is_some(), *list && !page_list && first.is_none(), "{field}");
        }
        for name in
            PAGED.iter().map(|p| p.0).chain(PAGE_LISTS).chain(LISTS.iter().map(|l| l.0)).chain(SEARCHES)
        {
            assert!(fields.iter().any(|f| f.1 == name), "{name} is not in the schema");
        }
        assert!(SEARCHES.iter().all(|s| paged_default(s).is_some()));
    }
}
