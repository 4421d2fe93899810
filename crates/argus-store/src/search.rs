//! Full-text search on behalf of a viewer: the query language of [`argus_domain::search`]
//! translated into each engine's own syntax, and passed as one bound parameter (never pasted
//! into SQL); the gate applied to the message and to its room, in the statement itself, like
//! every read.
//!
//! SQLite searches the FTS5 table `messages_fts`, PostgreSQL the `search` tsvector of `messages`
//! through its GIN index. Both indexes hold each message's organisation beside its text, and the
//! caller's is required inside the index (an `org` column term in the FTS5 `MATCH`, `org_id` in
//! the GIN index): another organisation's matches are skipped there instead of being fetched
//! for the gate to drop, so that their number does not show in a search's time. Each ranks a
//! message by its own text only (matched instances against its length on SQLite, cover density
//! `ts_rank_cd` on PostgreSQL), never by statistics of the whole table, which would count other
//! organisations' messages. Both then order by newest first. Snippets are made for the returned
//! page only.

use argus_domain::{
    RoomId, SearchExpr, SearchHit, SearchQuery, SearchRequest, search::HIGHLIGHT_END,
    search::HIGHLIGHT_START, to_unix_ms,
};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Double, Nullable, Text},
};

use crate::{
    Backend, Error, Result,
    db::{DbConn, Sql},
    read::{Gate, attach_evidence},
    rows::MessageRow,
};

/// SQLite's relevance of one message from the message alone: its matched instances `hits`
/// (counted in FTS5's `highlight()`) saturating like BM25's term frequency (k1 = 1.2, b = 0.75)
/// against its length in words, with a fixed reference length instead of the table's average,
/// and no inverse document frequency: nothing of other messages enters it.
const DOCUMENT_SCORE: &str =
    "CAST(w.hits AS DOUBLE PRECISION) / (w.hits + 1.2 * (0.25 + 0.75 * w.words / 12.0))";

/// How many matches a search ranks: the most recently stored ones the caller may see. A query
/// with fewer matches is ranked whole; a common term is ranked within its newest matches, so
/// that its cost stays bounded however large the archive (measured in docs/benchmarks.md).
pub const RANK_WINDOW: i64 = 10_000;

/// Words of context a snippet shows around what matched.
const SNIPPET_WORDS: i64 = 24;

/// A page of search results: ranked results are paged by position and report no total.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// The results, most relevant first.
    pub hits: Vec<SearchHit>,
    /// Whether more results follow (within the deepest position served).
    pub has_next_page: bool,
}

/// The FTS5 `MATCH` of a search by `org`: the organisation's term in the `org` column (`o` and
/// the id in hexadecimal, as migration 000015 indexes it) and the query confined to the `body`
/// column. The query's terms are all quoted, so it holds no column filter of its own and cannot
/// reach `org`.
pub(crate) fn fts5_match(org: &str, query: &SearchQuery) -> String {
    format!("org : \"o{}\" AND body : ({})", hex::encode(org), fts5_query(query))
}

/// The FTS5 form of a query: every term quoted (a quote inside doubled), `"term"*` for a
/// prefix, a quoted phrase for a phrase; `NOT` as FTS5's binary `NOT`.
pub(crate) fn fts5_query(query: &SearchQuery) -> String {
    fn quoted(text: &str) -> String {
        format!("\"{}\"", text.replace('"', "\"\""))
    }
    fn render(e: &SearchExpr) -> String {
        match e {
            SearchExpr::Word { text, prefix } => {
                format!("{}{}", quoted(text), if *prefix { "*" } else { "" })
            }
            SearchExpr::Phrase(text) => quoted(text),
            SearchExpr::Or(parts) => {
                format!("({})", parts.iter().map(render).collect::<Vec<_>>().join(" OR "))
            }
            SearchExpr::And(parts) => {
                let positive: Vec<String> =
                    parts.iter().filter(|p| !matches!(p, SearchExpr::Not(_))).map(render).collect();
                let mut out = format!("({})", positive.join(" AND "));
                for p in parts {
                    if let SearchExpr::Not(inner) = p {
                        out = format!("({out} NOT {})", render(inner));
                    }
                }
                out
            }
            // The parser only places a NOT inside an AND with a positive part.
            SearchExpr::Not(inner) => render(inner),
        }
    }
    render(query.expr())
}

/// The `to_tsquery` form of a query: every term a quoted lexeme (quotes and backslashes
/// doubled), `:*` for a prefix, a phrase as its words joined by `<->` (stop words then widen
/// the distance), `&`, `|`, `!`.
pub(crate) fn tsquery(query: &SearchQuery) -> String {
    fn quoted(text: &str) -> String {
        format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    }
    fn render(e: &SearchExpr) -> String {
        match e {
            SearchExpr::Word { text, prefix } => {
                format!("{}{}", quoted(text), if *prefix { ":*" } else { "" })
            }
            SearchExpr::Phrase(text) => {
                format!("({})", text.split_whitespace().map(quoted).collect::<Vec<_>>().join(" <-> "))
            }
            SearchExpr::Or(parts) => {
                format!("({})", parts.iter().map(render).collect::<Vec<_>>().join(" | "))
            }
            SearchExpr::And(parts) => {
                format!("({})", parts.iter().map(render).collect::<Vec<_>>().join(" & "))
            }
            SearchExpr::Not(inner) => format!("!{}", render(inner)),
        }
    }
    render(query.expr())
}

/// A ranked result: the message row, its room, its score and (on PostgreSQL) its snippet.
#[derive(Debug, QueryableByName)]
struct HitRow {
    #[diesel(embed)]
    message: MessageRow,
    #[diesel(sql_type = Text)]
    hit_room_id: String,
    #[diesel(sql_type = Double)]
    score: f64,
    #[diesel(sql_type = Nullable<Text>)]
    snippet: Option<String>,
}

/// The columns of a hit read back from the window `w`.
const HIT_COLUMNS_OF_W: &str = "w.id, w.event_id, w.sender, w.msgtype, w.body, w.sent_at, w.edited, w.redacted, \
     w.encrypted, w.decrypted, w.undecryptable, w.reply_to, w.thread_root, w.media, w.classification, \
     w.sender_trust, w.hit_room_id";

const MESSAGE_COLUMNS: &str = "m.id, m.event_id, m.sender, m.msgtype, m.body, m.sent_at, m.edited, \
     m.redacted, m.encrypted, m.decrypted, m.undecryptable, m.reply_to, m.thread_root, m.media, m.classification, \
     m.sender_trust, r.room_id AS hit_room_id";

/// Appends the gate on message and room, and the request's filters.
fn push_filters(sql: &mut Sql<'_>, gate: &Gate, request: &SearchRequest) {
    sql.push(" AND ");
    gate.apply(sql, "m");
    sql.push(" AND ");
    gate.apply(sql, "r");
    if let Some(room) = &request.room_id {
        sql.push(" AND r.room_id = ").bind::<Text, _>(room.as_str().to_owned());
    }
    if let Some(sender) = &request.sender {
        sql.push(" AND m.sender = ").bind::<Text, _>(sender.as_str().to_owned());
    }
    if let Some(from) = request.from {
        sql.push(" AND m.sent_at >= ").bind::<BigInt, _>(to_unix_ms(from));
    }
    if let Some(to) = request.to {
        sql.push(" AND m.sent_at < ").bind::<BigInt, _>(to_unix_ms(to));
    }
}

fn push_page(sql: &mut Sql<'_>, request: &SearchRequest, alias: &str) {
    sql.push(" ORDER BY score DESC, ").push(alias).push(".sent_at DESC, ");
    sql.push(alias)
        .push(".id DESC LIMIT ")
        .bind::<BigInt, _>(i64::from(request.first) + 1)
        .push(" OFFSET ")
        .bind::<BigInt, _>(i64::from(request.offset));
}

/// Runs `request` (checked by the caller) for `gate`; the caller runs it in one read transaction.
pub(crate) fn search(conn: &mut DbConn, gate: &Gate, request: &SearchRequest) -> Result<SearchPage> {
    let backend = conn.backend();
    let (start, end) = (HIGHLIGHT_START.to_string(), HIGHLIGHT_END.to_string());
    let mut rows: Vec<HitRow> = match backend {
        Backend::Sqlite => {
            let matching = fts5_match(gate.org(), &request.query);
            // The ranking reads only the index and the gate's columns; the page's rows and
            // snippets follow by id (a snippet per match would cost as much as the search).
            // The window: the newest matches the gate lets through, read from the index in
            // descending rowid order (no sort), scored as they are read.
            //
            // The score is the document's own (see `DOCUMENT_SCORE`): FTS5's `bm25()` weighs
            // terms by statistics of the whole table, every organisation and classification
            // included, and a score or an order computed from them would tell a caller whether
            // text they cannot see contains their words.
            let mut sql = Sql::new(backend);
            sql.push("SELECT w.id AS id, ").push(DOCUMENT_SCORE).push(
                " AS score FROM (SELECT m.id AS id, m.sent_at AS sent_at, \
                 length(highlight(messages_fts, 0, ",
            );
            sql.bind::<Text, _>(start.clone())
                .push(
                    ", '')) - length(m.body) AS hits, \
                 length(m.body) - length(replace(m.body, ' ', '')) + 1 AS words FROM messages_fts \
                 JOIN messages m ON m.id = messages_fts.rowid JOIN rooms r ON r.id = m.room_pk \
                 WHERE messages_fts MATCH ",
                )
                .bind::<Text, _>(matching.clone());
            push_filters(&mut sql, gate, request);
            sql.push(" ORDER BY messages_fts.rowid DESC LIMIT ").bind::<BigInt, _>(RANK_WINDOW);
            sql.push(") w");
            push_page(&mut sql, request, "w");
            let ranked: Vec<RankRow> = sql.build_cached().load(conn)?;
            if ranked.is_empty() {
                Vec::new()
            } else {
                let mut sql = Sql::new(backend);
                sql.push("SELECT ").push(MESSAGE_COLUMNS);
                sql.push(", 0.0 AS score, snippet(messages_fts, 0, ").bind::<Text, _>(start);
                sql.push(", ").bind::<Text, _>(end).push(", '…', ").bind::<BigInt, _>(SNIPPET_WORDS);
                // Driven by the page's ids (`NOT INDEXED` leaves only the primary key, `CROSS
                // JOIN` fixes the order): otherwise SQLite walks the organisation's index and
                // asks the full-text index about every row of it.
                sql.push(
                    ") AS snippet FROM messages m NOT INDEXED CROSS JOIN rooms r CROSS JOIN messages_fts \
                     WHERE m.id IN (",
                );
                for (i, r) in ranked.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind::<BigInt, _>(r.id);
                }
                sql.push(") AND r.id = m.room_pk AND messages_fts.rowid = m.id AND messages_fts MATCH ")
                    .bind::<Text, _>(matching.clone());
                push_filters(&mut sql, gate, request);
                let mut by_id: std::collections::HashMap<i64, HitRow> =
                    sql.build().load::<HitRow>(conn)?.into_iter().map(|h| (h.message.id, h)).collect();
                ranked
                    .iter()
                    .filter_map(|r| {
                        by_id.remove(&r.id).map(|mut h| {
                            h.score = r.score;
                            h
                        })
                    })
                    .collect()
            }
        }
        Backend::Postgres => search_pg(conn, gate, request, &start, &end)?,
    };
    let has_next_page = rows.len() > request.first as usize;
    rows.truncate(request.first as usize);
    let mut hits = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    let mut extra = Vec::with_capacity(rows.len());
    for row in rows {
        let room: RoomId =
            row.hit_room_id.parse().map_err(|_| Error::Corrupt("a stored room id is malformed"))?;
        messages.push(row.message.into_domain(&room)?);
        extra.push((row.snippet.unwrap_or_default(), row.score));
    }
    attach_evidence(conn, gate, &mut messages)?;
    for (message, (snippet, score)) in messages.into_iter().zip(extra) {
        hits.push(SearchHit { message, snippet, score });
    }
    Ok(SearchPage { hits, has_next_page })
}

#[derive(Debug, QueryableByName)]
struct RankRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Double)]
    score: f64,
}

/// The PostgreSQL search in one statement: the query parsed once (a CTE), the page ranked by
/// the GIN-indexed match, headlines for the page only.
fn search_pg(
    conn: &mut DbConn,
    gate: &Gate,
    request: &SearchRequest,
    start: &str,
    end: &str,
) -> Result<Vec<HitRow>> {
    // The query text is bound where each level needs it: `to_tsquery` on a parameter keeps
    // the GIN index usable (a CTE of the query would hide it from the planner).
    let text = tsquery(&request.query);
    let mut sql = Sql::new(Backend::Postgres);
    sql.push("SELECT t.*, ts_headline('argus_french', t.body, to_tsquery('argus_french', ")
        .bind::<Text, _>(text.clone())
        .push("), ")
        .bind::<Text, _>(format!(
            "StartSel=\"{start}\", StopSel=\"{end}\", MaxWords={SNIPPET_WORDS}, MinWords=8, \
             MaxFragments=2, FragmentDelimiter=\" … \""
        ))
        .push(") AS snippet FROM (SELECT ")
        .push(HIT_COLUMNS_OF_W)
        .push(", CAST(ts_rank_cd(w.search, to_tsquery('argus_french', ")
        .bind::<Text, _>(text.clone())
        .push(")) AS DOUBLE PRECISION) AS score FROM (SELECT ")
        .push(MESSAGE_COLUMNS)
        .push(
            ", m.search FROM messages m JOIN rooms r ON r.id = m.room_pk \
             WHERE m.search @@ to_tsquery('argus_french', ",
        )
        .bind::<Text, _>(text)
        .push(")");
    push_filters(&mut sql, gate, request);
    // The window: the newest matches the gate lets through.
    sql.push(" ORDER BY m.id DESC LIMIT ").bind::<BigInt, _>(RANK_WINDOW).push(") w");
    push_page(&mut sql, request, "w");
    sql.push(") t ORDER BY t.score DESC, t.sent_at DESC, t.id DESC");
    Ok(sql.build_cached().load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> SearchQuery {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn queries_translate_into_each_engines_syntax() {
        let cases = [
            ("drone", "\"drone\"", "'drone'"),
            ("dro* vol", "(\"dro\"* AND \"vol\")", "('dro':* & 'vol')"),
            ("\"plan de vol\" OR x", "(\"plan de vol\" OR \"x\")", "(('plan' <-> 'de' <-> 'vol') | 'x')"),
            ("a -b -c", "(((\"a\") NOT \"b\") NOT \"c\")", "('a' & !'b' & !'c')"),
            ("l'avion d\"x\"", "(\"l'avion\" AND \"d\" AND \"x\")", "('l''avion' & 'd' & ('x'))"),
            ("a\\b", "\"a\\b\"", "'a\\\\b'"),
        ];
        for (input, fts, ts) in cases {
            assert_eq!(fts5_query(&q(input)), fts, "{input}");
            assert_eq!(tsquery(&q(input)), ts, "{input}");
        }
    }

    #[test]
    fn the_fts5_match_requires_the_organisation_and_confines_the_query_to_the_text() {
        assert_eq!(fts5_match("org-a", &q("drone")), "org : \"o6f72672d61\" AND body : (\"drone\")");
        assert_eq!(
            fts5_match("police-nationale.fr", &q("a -b")),
            "org : \"o706f6c6963652d6e6174696f6e616c652e6672\" AND body : (((\"a\") NOT \"b\"))"
        );
        // Column filters, engine operators and quotes typed by the caller stay quoted text.
        for input in ["org:x", "{org}:x", "body:x OR org:o6*", "(a) OR (\"org\":o6*)", "NEAR(a b)", "^o6*"] {
            let matching = fts5_match("org-a", &q(input));
            let user = matching.strip_prefix("org : \"o6f72672d61\" AND body : (").unwrap();
            let user = user.strip_suffix(')').unwrap();
            assert_eq!(user, fts5_query(&q(input)));
            let unquoted: String = user.split('"').step_by(2).collect();
            assert!(!unquoted.contains([':', '{', '^']), "{input}: {matching}");
        }
    }
}
