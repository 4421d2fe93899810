//! Full-text search: the query language analysts type, parsed once into a checked expression
//! that each store engine translates into its own syntax (never pasted into SQL), and what a
//! search asks for and returns.
//!
//! The language, the same on every engine:
//! - words, matched whatever their case and accents (`ecole` finds `École`), each a separate
//!   term that must appear (implicit `AND`);
//! - `"a phrase"`: those words next to each other, in that order;
//! - `word*`: any word that starts with `word` (at least two characters);
//! - `AND`, `OR`, `NOT` (upper case; lower case they are ordinary words), `-word` as a short
//!   `NOT word`, and parentheses. `NOT` binds tightest, then `AND`, then `OR`.
//!
//! Every group of `AND`ed terms must hold at least one positive term: a query made only of
//! exclusions (`NOT secret`) would read the whole archive and is refused.
//!
//! ```
//! use argus_domain::SearchQuery;
//!
//! let q: SearchQuery = r#""plan de vol" OR (drone* -essai)"#.parse()?;
//! assert_eq!(q.to_string(), r#"("plan de vol" OR (drone* AND NOT essai))"#);
//! assert!("".parse::<SearchQuery>().is_err());
//! assert!("NOT secret".parse::<SearchQuery>().is_err());
//! assert!(r#""unclosed"#.parse::<SearchQuery>().is_err());
//! # Ok::<(), argus_domain::Error>(())
//! ```

use std::{fmt, str::FromStr};

use time::OffsetDateTime;

use crate::{Error, Result, RoomId, StoredMessage, UserId};

/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// The most terms (words, phrases, prefixes) one query may hold.
pub const MAX_QUERY_TERMS: usize = 32;
/// The deepest nesting of parentheses and `NOT`s.
pub const MAX_QUERY_DEPTH: usize = 8;
/// The most results one search page returns.
pub const MAX_SEARCH_PAGE: u32 = 100;
/// How deep a search may be paged: results past this rank are not served (ranked results
/// are paged by position, and a deep position costs a sort of everything before it).
pub const MAX_SEARCH_OFFSET: u32 = 1_000;
/// The shortest prefix `word*` accepted, in characters.
pub const MIN_PREFIX_CHARS: usize = 2;

/// A parsed, checked search query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery(SearchExpr);

/// A node of a parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchExpr {
    /// One word; with `prefix`, any word starting with it.
    Word {
        /// The word as typed (case and accents are folded by the engines).
        text: String,
        /// Whether it was written `word*`.
        prefix: bool,
    },
    /// Words next to each other, in order.
    Phrase(String),
    /// Every part must match (none of the negated ones).
    And(Vec<SearchExpr>),
    /// At least one part must match.
    Or(Vec<SearchExpr>),
    /// The part must not match (only ever inside an `And` that has a positive part).
    Not(Box<SearchExpr>),
}

impl SearchQuery {
    /// The root of the expression.
    pub fn expr(&self) -> &SearchExpr {
        &self.0
    }
}

impl fmt::Display for SearchQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for SearchExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, parts: &[SearchExpr], op: &str| {
            f.write_str("(")?;
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                p.fmt(f)?;
            }
            f.write_str(")")
        };
        match self {
            Self::Word { text, prefix } => write!(f, "{text}{}", if *prefix { "*" } else { "" }),
            Self::Phrase(text) => write!(f, "\"{text}\""),
            Self::And(parts) => join(f, parts, "AND"),
            Self::Or(parts) => join(f, parts, "OR"),
            Self::Not(inner) => write!(f, "NOT {inner}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String, bool),
    Phrase(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidSearch(reason.into())
}

/// Whether `text` holds something an engine indexes (a letter or a digit).
fn has_content(text: &str) -> bool {
    text.chars().any(char::is_alphanumeric)
}

fn tokenize(input: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        match c {
            '(' => {
                chars.next();
                tokens.push(Token::Open);
            }
            ')' => {
                chars.next();
                tokens.push(Token::Close);
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    text.push(c);
                }
                if !closed {
                    let at = input[..start].chars().count() + 1;
                    return Err(invalid(format!("the quote opened at character {at} is never closed")));
                }
                let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                if !has_content(&text) {
                    return Err(invalid("a phrase must contain a letter or a digit"));
                }
                tokens.push(Token::Phrase(text));
            }
            // `-` starting a term excludes it; inside a word it is a hyphen.
            '-' => {
                chars.next();
                if chars.peek().is_none_or(|&(_, c)| c.is_whitespace()) {
                    return Err(invalid("`-` must be followed by what it excludes"));
                }
                tokens.push(Token::Not);
            }
            _ => {
                let mut word = String::new();
                while let Some(&(_, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                match word.as_str() {
                    "AND" => tokens.push(Token::And),
                    "OR" => tokens.push(Token::Or),
                    "NOT" => tokens.push(Token::Not),
                    _ => {
                        let prefix = word.ends_with('*');
                        let text = word.trim_end_matches('*');
                        if text.contains('*') || word.ends_with("**") {
                            return Err(invalid("`*` may only end a word"));
                        }
                        if !has_content(text) {
                            return Err(invalid(format!("{word:?} holds no letter or digit")));
                        }
                        // What the engines expand is the last word of the term (`xx-a*` expands
                        // `a`): that word must have the minimum length.
                        let last_word = text.chars().rev().take_while(|c| c.is_alphanumeric()).count();
                        if prefix && last_word < MIN_PREFIX_CHARS {
                            return Err(invalid(format!(
                                "a prefix needs at least {MIN_PREFIX_CHARS} characters before `*`"
                            )));
                        }
                        tokens.push(Token::Word(text.to_owned(), prefix));
                    }
                }
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self, depth: usize) -> Result<SearchExpr> {
        let mut parts = vec![self.and(depth)?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            parts.push(self.and(depth)?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { SearchExpr::Or(parts) })
    }

    fn and(&mut self, depth: usize) -> Result<SearchExpr> {
        let mut parts = vec![self.unary(depth)?];
        loop {
            match self.peek() {
                Some(Token::And) => {
                    self.at += 1;
                    parts.push(self.unary(depth)?);
                }
                Some(Token::Or | Token::Close) | None => break,
                Some(_) => parts.push(self.unary(depth)?),
            }
        }
        if !parts.iter().any(|p| !matches!(p, SearchExpr::Not(_))) {
            return Err(invalid("every group needs a term that must match, not only exclusions"));
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { SearchExpr::And(parts) })
    }

    fn unary(&mut self, depth: usize) -> Result<SearchExpr> {
        if depth >= MAX_QUERY_DEPTH {
            return Err(invalid(format!("the query nests deeper than {MAX_QUERY_DEPTH} levels")));
        }
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        match token {
            Some(Token::Not) => match self.unary(depth + 1)? {
                // The engines read a double negation differently: refused rather than guessed.
                SearchExpr::Not(_) => Err(invalid("NOT cannot negate a NOT")),
                inner => Ok(SearchExpr::Not(Box::new(inner))),
            },
            Some(Token::Open) => {
                let inner = self.or(depth + 1)?;
                if self.peek() != Some(&Token::Close) {
                    return Err(invalid("a parenthesis is never closed"));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Word(text, prefix)) => self.term(SearchExpr::Word { text, prefix }),
            Some(Token::Phrase(text)) => self.term(SearchExpr::Phrase(text)),
            Some(Token::Close) => Err(invalid("a closing parenthesis has no opening one")),
            Some(Token::And | Token::Or) => Err(invalid("AND and OR need a term on each side")),
            None => Err(invalid("the query ends where a term is expected")),
        }
    }

    fn term(&mut self, term: SearchExpr) -> Result<SearchExpr> {
        self.terms += 1;
        if self.terms > MAX_QUERY_TERMS {
            return Err(invalid(format!("the query holds more than {MAX_QUERY_TERMS} terms")));
        }
        Ok(term)
    }
}

impl FromStr for SearchQuery {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        if input.len() > MAX_QUERY_BYTES {
            return Err(invalid(format!("the query is longer than {MAX_QUERY_BYTES} bytes")));
        }
        if input.chars().any(char::is_control) {
            return Err(invalid("the query holds a control character"));
        }
        let tokens = tokenize(input)?;
        if tokens.is_empty() {
            return Err(invalid("the query is empty"));
        }
        let mut parser = Parser { tokens, at: 0, terms: 0 };
        let expr = parser.or(0)?;
        if parser.at < parser.tokens.len() {
            return Err(invalid("a closing parenthesis has no opening one"));
        }
        Ok(Self(expr))
    }
}

/// A search on behalf of a viewer: the query, optional filters, and the page wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// What to look for.
    pub query: SearchQuery,
    /// Only in this room.
    pub room_id: Option<RoomId>,
    /// Only from this sender.
    pub sender: Option<UserId>,
    /// Only messages sent at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Only messages sent before this time.
    pub to: Option<OffsetDateTime>,
    /// How many results (1 to [`MAX_SEARCH_PAGE`]).
    pub first: u32,
    /// How many ranked results to skip (at most [`MAX_SEARCH_OFFSET`]).
    pub offset: u32,
}

impl SearchRequest {
    /// Checks the page bounds and the time window.
    pub fn validate(&self) -> Result<()> {
        if self.first == 0 || self.first > MAX_SEARCH_PAGE {
            return Err(invalid(format!("first must be between 1 and {MAX_SEARCH_PAGE}")));
        }
        if self.offset > MAX_SEARCH_OFFSET {
            return Err(invalid(format!(
                "results past the first {MAX_SEARCH_OFFSET} are not served; refine the query"
            )));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(invalid("`from` must be before `to`"));
        }
        Ok(())
    }
}

/// Where a highlighted term starts in [`SearchHit::snippet`].
pub const HIGHLIGHT_START: char = '\u{E000}';
/// Where a highlighted term ends in [`SearchHit::snippet`].
pub const HIGHLIGHT_END: char = '\u{E001}';

/// One result of a search: the message, and an excerpt of its text around what matched.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    /// The message, as a list of the room's messages shows it.
    pub message: StoredMessage,
    /// An excerpt of the body with each matched term between [`HIGHLIGHT_START`] and
    /// [`HIGHLIGHT_END`] (private-use characters; a body that holds them itself can shift the
    /// highlighting, never inject markup: [`snippet_html`] escapes and balances).
    pub snippet: String,
    /// The engine's relevance score: higher is more relevant (comparable within one search).
    pub score: f64,
}

/// The snippet as HTML: the text escaped, each highlighted term in `<mark>…</mark>`, tags always
/// balanced.
///
/// ```
/// use argus_domain::search::{snippet_html, HIGHLIGHT_END as E, HIGHLIGHT_START as S};
/// assert_eq!(snippet_html(&format!("a {S}<b>{E} c")), "a <mark>&lt;b&gt;</mark> c");
/// assert_eq!(snippet_html(&format!("{E}x {S}y")), "x <mark>y</mark>");
/// ```
pub fn snippet_html(snippet: &str) -> String {
    let mut out = String::with_capacity(snippet.len() + 32);
    let mut open = false;
    for c in snippet.chars() {
        match c {
            HIGHLIGHT_START if !open => {
                out.push_str("<mark>");
                open = true;
            }
            HIGHLIGHT_END if open => {
                out.push_str("</mark>");
                open = false;
            }
            HIGHLIGHT_START | HIGHLIGHT_END => {}
            c => push_escaped(&mut out, c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

/// `text` escaped for HTML, in element content and in quoted attribute values alike (`&`, `<`,
/// `>`, `"` and `'`): the snippets' escaping, and the disclosure transcript's.
///
/// ```
/// assert_eq!(argus_domain::search::escape_html("<a href='x'>&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;");
/// ```
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&#39;"),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String> {
        s.parse::<SearchQuery>().map(|q| q.to_string())
    }

    #[test]
    fn the_language_parses_to_one_expression() {
        let ok = |s: &str, want: &str| assert_eq!(parse(s).as_deref(), Ok(want), "{s}");
        ok("drone", "drone");
        ok("drone vol", "(drone AND vol)");
        ok("drone AND vol", "(drone AND vol)");
        ok("a OR b c", "(a OR (b AND c))");
        ok("a -b", "(a AND NOT b)");
        ok("jean-pierre", "jean-pierre");
        ok("a NOT (b OR c)", "(a AND NOT (b OR c))");
        ok("\"  plan   de vol \"", "\"plan de vol\"");
        ok("écol*", "écol*");
        ok("and or not", "(and AND or AND not)");
        ok("((a))", "a");
    }

    #[test]
    fn malformed_queries_are_refused_with_a_reason() {
        for bad in [
            "",
            "   ",
            "\"open",
            "(a",
            "a)",
            "AND",
            "a OR",
            "OR a",
            "NOT a",
            "-a",
            "a OR NOT b",
            "*",
            "a*b",
            "x*",
            "!!!",
            "\"...\"",
            "a\u{0}b",
            "a -",
            "a.*",
            "xx-a*",
            "a NOT NOT b",
            "a --b",
        ] {
            assert!(matches!(bad.parse::<SearchQuery>(), Err(Error::InvalidSearch(_))), "{bad:?}");
        }
        assert!("x".repeat(MAX_QUERY_BYTES + 1).parse::<SearchQuery>().is_err());
        assert!(vec!["w"; MAX_QUERY_TERMS + 1].join(" ").parse::<SearchQuery>().is_err());
        assert!(vec!["w"; MAX_QUERY_TERMS].join(" ").parse::<SearchQuery>().is_ok());
        let deep = format!("{}a{}", "(".repeat(MAX_QUERY_DEPTH + 1), ")".repeat(MAX_QUERY_DEPTH + 1));
        assert!(deep.parse::<SearchQuery>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_input_parses_or_is_refused_without_panicking(input in "\\PC{0,80}") {
            if let Ok(q) = input.parse::<SearchQuery>() {
                // What a query prints parses back to itself.
                proptest::prop_assert_eq!(q.to_string().parse::<SearchQuery>().map(|r| r.to_string()), Ok(q.to_string()));
            }
        }

        #[test]
        fn snippets_are_always_balanced_and_escaped(input in "[a<>&\u{E000}\u{E001} ]{0,40}") {
            let html = snippet_html(&input);
            proptest::prop_assert_eq!(html.matches("<mark>").count(), html.matches("</mark>").count());
            proptest::prop_assert!(!html.replace("<mark>", "").replace("</mark>", "").contains('<'));
        }
    }
}
