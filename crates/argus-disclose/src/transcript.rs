//! `data/transcript.html`: the room for a person to read. A static page: no script, nothing
//! fetched from anywhere (a Content-Security-Policy that forbids it), inline CSS with a print
//! stylesheet, labels in French and English. Each message is an `<article class="msg">` whose
//! `data-event-id` names it, so that a verifier can match it with `data/messages.jsonl`.

use std::io::{self, Write};

use argus_domain::SenderTrust;

use crate::messages::{Line, is_redaction};

/// What the page says of the sending device of an encrypted message (none for a message not
/// encrypted). No label is part of another, so that a verifier can look for one in the text.
pub(crate) const fn trust_label(trust: SenderTrust) -> Option<&'static str> {
    match trust {
        SenderTrust::Verified => Some("Appareil d'envoi / Sending device: vérifié / verified device"),
        SenderTrust::UnverifiedDevice => {
            Some("Appareil d'envoi / Sending device: non vérifié / unverified device")
        }
        SenderTrust::IdentityChanged => {
            Some("Appareil d'envoi / Sending device: identité changée / identity changed")
        }
        SenderTrust::UnknownDevice => Some("Appareil d'envoi / Sending device: inconnu / unknown device"),
        SenderTrust::NotEncrypted => None,
    }
}

/// What the page's head says of the package.
pub(crate) struct Heading<'a> {
    pub(crate) package_id: &'a str,
    pub(crate) org: &'a str,
    pub(crate) room_id: &'a str,
    pub(crate) room_name: Option<&'a str>,
    pub(crate) range: &'a str,
    pub(crate) requester: &'a str,
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#111;background:#fff;line-height:1.4}\
h1{font-size:1.4em}dl.meta{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}\
dl.meta dt{font-weight:bold}article.msg{border-top:1px solid #bbb;padding:.6em 0}\
.sender{font-weight:bold}.eid{color:#555;font-size:.8em;font-family:monospace}\
.body{white-space:pre-wrap;margin:.3em 0}.trust{font-size:.8em;color:#555}.redacted{color:#a00;font-style:italic}\
ol.versions{font-size:.9em;color:#333}ol.versions .body{margin:.1em 0}\
.redaction{color:#a00}.attachment{font-size:.9em}.hash{font-family:monospace;font-size:.8em;word-break:break-all}\
@media print{body{margin:0;font-size:10pt}article.msg{break-inside:avoid}a{color:#000;text-decoration:none}\
a[href]::after{content:\" (\" attr(href) \")\";font-size:.8em}}";

pub(crate) use argus_domain::search::escape_html as escape;

/// Writes the page's head.
pub(crate) fn start(out: &mut impl Write, h: &Heading<'_>) -> io::Result<()> {
    let title = h.room_name.map_or_else(|| escape(h.room_id), escape);
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src 'self'\">\n\
<meta name=\"referrer\" content=\"no-referrer\">\n<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
<h1>Communication d'un salon Tchap / Disclosure of a Tchap room: {title}</h1>\n<dl class=\"meta\">\n\
<dt>Identifiant du paquet / Package id</dt><dd>{}</dd>\n\
<dt>Organisation / Organisation</dt><dd>{}</dd>\n\
<dt>Salon / Room</dt><dd>{}</dd>\n\
<dt>Période / Range</dt><dd>{}</dd>\n\
<dt>Demandeur / Requester</dt><dd>{}</dd>\n\
<dt>Heures / Times</dt><dd>UTC</dd>\n</dl>\n<main>\n",
        escape(h.package_id),
        escape(h.org),
        escape(h.room_id),
        escape(h.range),
        escape(h.requester),
    )
}

/// Writes one message.
pub(crate) fn message(out: &mut impl Write, n: usize, line: &Line<'_>) -> io::Result<()> {
    let eid = escape(line.event_id);
    write!(
        out,
        "<article class=\"msg\" id=\"m{n}\" data-event-id=\"{eid}\">\n<header><span class=\"sender\">{}</span> \
<time datetime=\"{t}\">{t}</time> <span class=\"eid\">{eid}</span>",
        escape(line.sender),
        t = escape(&line.sent_at),
    )?;
    if line.edited {
        out.write_all(" <span class=\"edited\">(modifié / edited)</span>".as_bytes())?;
    }
    out.write_all(b"</header>\n")?;
    if let Some(label) = trust_label(line.sender_trust) {
        writeln!(
            out,
            "<p class=\"trust\" data-sender-trust=\"{}\">{}</p>",
            line.sender_trust.code(),
            escape(label)
        )?;
    }
    match line.body {
        Some(body) => writeln!(out, "<div class=\"body\">{}</div>", escape(body))?,
        None if line.redacted => {
            out.write_all("<p class=\"redacted\">Message supprimé / Message redacted</p>\n".as_bytes())?;
        }
        None => out
            .write_all("<p class=\"redacted\">Sans contenu lisible / No readable content</p>\n".as_bytes())?,
    }
    if let Some(r) = &line.redaction {
        writeln!(
            out,
            "<p class=\"redaction\">Supprimé par / Redacted by <span class=\"sender\">{}</span>, \
le / at <time datetime=\"{t}\">{t}</time>, motif / reason: {}</p>",
            escape(r.by),
            r.reason.map_or_else(|| "(aucun / none)".to_owned(), escape),
            t = escape(&r.at),
        )?;
    }
    if let Some(held) = &line.held {
        if let Some(body) = held.body {
            writeln!(
                out,
                "<p>Contenu conservé (gel juridique) / Content held (legal hold):</p><div class=\"body held\">{}</div>",
                escape(body)
            )?;
        }
        for v in &held.versions {
            if let Some(body) = v.body {
                writeln!(
                    out,
                    "<div class=\"body held\" data-event-id=\"{}\">{}</div>",
                    escape(v.event_id),
                    escape(body)
                )?;
            }
        }
    }
    if !line.versions.is_empty() {
        out.write_all("<p>Versions (original, modifications, suppressions / original, edits, redactions):</p>\n<ol class=\"versions\">\n".as_bytes())?;
        for v in &line.versions {
            let kind = match v.kind {
                "ORIGINAL" => "Original / Original",
                "EDIT" => "Modification / Edit",
                _ => "Suppression / Redaction",
            };
            write!(
                out,
                "<li data-run=\"{}\" data-position=\"{}\"><span class=\"kind\">{kind}</span> <span class=\"sender\">{}</span> \
<time datetime=\"{t}\">{t}</time> <span class=\"eid\">{}</span>",
                v.run,
                v.position,
                escape(v.sender),
                escape(v.event_id),
                t = escape(&v.sent_at),
            )?;
            if is_redaction(v.kind) {
                write!(
                    out,
                    " motif / reason: {}",
                    v.reason.map_or_else(|| "(aucun / none)".to_owned(), escape)
                )?;
            } else if let Some(body) = v.body {
                write!(out, "<div class=\"body\">{}</div>", escape(body))?;
            }
            out.write_all(b"</li>\n")?;
        }
        out.write_all(b"</ol>\n")?;
    }
    for v in &line.redacted_versions {
        writeln!(
            out,
            "<p class=\"redacted\">Version supprimée / Redacted version ({}) <span class=\"sender\">{}</span> \
<time datetime=\"{t}\">{t}</time> <span class=\"eid\">{}</span></p>",
            escape(v.kind),
            escape(v.sender),
            escape(v.event_id),
            t = escape(&v.sent_at),
        )?;
    }
    if let Some(a) = &line.attachment {
        let name = a.name.map_or_else(|| "(sans nom / unnamed)".to_owned(), escape);
        out.write_all(b"<p class=\"attachment\">Fichier / File: ")?;
        match &a.file {
            Some(file) => write!(out, "<a href=\"{}\">{name}</a>", escape(file))?,
            None => write!(out, "{name} (non inclus / not included)")?,
        }
        write!(
            out,
            " &middot; {} &middot; {} &middot; statut / status {}",
            a.mimetype.map_or_else(|| "?".to_owned(), escape),
            a.size.map_or_else(|| "?".to_owned(), |s| format!("{s} octets / bytes")),
            escape(a.status),
        )?;
        if let Some(sha) = &a.sha256 {
            write!(out, "<br><span class=\"hash\">SHA-256 {}</span>", escape(sha))?;
        }
        out.write_all(b"</p>\n")?;
    }
    out.write_all(b"</article>\n")
}

/// Writes the page's end.
pub(crate) fn end(out: &mut impl Write, messages: u64) -> io::Result<()> {
    write!(
        out,
        "</main>\n<footer><p>{messages} message(s). Vérification hors ligne / Offline verification: \
verify/README.md</p></footer>\n</body>\n</html>\n"
    )
}
