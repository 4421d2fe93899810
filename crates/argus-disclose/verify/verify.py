#!/usr/bin/env python3
"""Offline verification of an Argus Tchap disclosure package.

Usage: python3 data/verify/verify.py --log-key 'NAME+HEXID+BASE64' PACKAGE_DIR

Needs Python 3 and the `cryptography` package only. The log's verifier key is given on the
command line: never one read from the package. Checks:

1. data/log/checkpoint is a signed note whose Ed25519 signature verifies with that key;
2. every data/log/records/<index> is included in that checkpoint's tree (RFC 9162 inclusion
   proof in data/log/proofs/<index>.tlog-proof, C2SP tlog-proof format);
3. every version (a line of data/log/versions/<run>/versions.jsonl: its canonical bytes) is
   included in the eventsRoot of the run's AUDIT record data/log/records/<run> (the same line of
   proofs.txt: its position among the run's leaves, then the RFC 9162 path in base64);
4. the DISCLOSE record of this package names the SHA-256 of data/messages.jsonl and its count;
5. messages.jsonl agrees with the versions it cites (a message not redacted shows the content of
   its latest version), with the files in data/attachments and their ATTACHMENT records, and with
   data/transcript.html (same messages, senders, bodies).

The bag's manifests are checked by `python3 -m bagit --validate`, its signature by minisign.
Exit status 0 when everything verifies, 1 otherwise (each failure printed).
"""

import argparse
import base64
import hashlib
import html.parser
import itertools
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class Failure(Exception):
    pass


def sha256(data):
    return hashlib.sha256(data).digest()


def leaf_hash(data):
    return sha256(b"\x00" + data)


def node_hash(left, right):
    return sha256(b"\x01" + left + right)


def root_from_inclusion(index, size, leaf, proof):
    """RFC 9162 section 2.1.3.2: the root an inclusion proof leads to, or None."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def parse_verifier_key(vkey):
    parts = vkey.strip().split("+", 2)  # the base64 key may itself hold "+"
    if len(parts) != 3:
        raise Failure("the log key is not NAME+HEXID+BASE64")
    name, hexid, b64 = parts
    raw = base64.b64decode(b64, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise Failure("the log key is not an Ed25519 signed-note key")
    key_id = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if key_id.hex() != hexid.lower():
        raise Failure("the log key's id does not match its name and key")
    return name, key_id, Ed25519PublicKey.from_public_bytes(raw[1:])


def verify_note(note, vkey):
    """Checks a signed note (C2SP signed-note) against the key; returns its text."""
    name, key_id, public = parse_verifier_key(vkey)
    text_end = note.rfind("\n\n")
    if text_end < 0:
        raise Failure("the checkpoint is not a signed note")
    text, sigs = note[: text_end + 1], note[text_end + 2 :]
    for line in sigs.splitlines():
        if not line.startswith("\u2014 "):
            raise Failure("the checkpoint has a malformed signature line")
        sig_name, _, b64 = line[2:].rpartition(" ")
        raw = base64.b64decode(b64)
        if sig_name != name or raw[:4] != key_id:
            continue
        try:
            public.verify(raw[4:], text.encode())
        except InvalidSignature:
            raise Failure("the checkpoint's signature does not verify with the log key")
        return text
    raise Failure("the checkpoint carries no signature by the log key")


def parse_checkpoint(text):
    lines = text.split("\n")
    if len(lines) < 4:
        raise Failure("the checkpoint's body is malformed")
    root = base64.b64decode(lines[2])
    if len(root) != 32:
        raise Failure("the checkpoint's root is malformed")
    return lines[0], int(lines[1]), root


def parse_hashes(lines):
    out = []
    for line in lines:
        raw = base64.b64decode(line, validate=True)
        if len(raw) != 32:
            raise Failure("a proof hash is malformed")
        out.append(raw)
    return out


def parse_tlog_proof(text):
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise Failure("a tlog-proof is malformed")
    lines = head.split("\n")
    if lines[0] != "c2sp.org/tlog-proof@v1":
        raise Failure("a tlog-proof has an unknown header")
    rest = lines[1:]
    if rest and rest[0].startswith("extra "):
        rest = rest[1:]
    if not rest or not rest[0].startswith("index "):
        raise Failure("a tlog-proof has no index")
    return int(rest[0][6:]), parse_hashes([l for l in rest[1:] if l]), note


class Transcript(html.parser.HTMLParser):
    """Collects the text of each <article class="msg" data-event-id=…>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.articles = {}
        self.order = []
        self.current = None
        self.depth = 0
        self.forbidden = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "iframe", "object", "embed", "img", "link"):
            self.forbidden.append(tag)
        if tag == "article" and "msg" in (attrs.get("class") or "").split():
            eid = attrs.get("data-event-id") or ""
            self.current = eid
            self.order.append(eid)
            self.articles[eid] = []
            self.depth = 1
        elif tag == "article" and self.current is not None:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "article" and self.current is not None:
            self.depth -= 1
            if self.depth == 0:
                self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.articles[self.current].append(data)


def latest_content(own):
    """The version whose content a message not redacted shows, among the versions it cites (each
    with its run and position): the latest ORIGINAL or EDIT not withdrawn by a redaction of its
    own event, by its sentAt, then an EDIT after an ORIGINAL, then one holding content after one
    recorded without (stored undecrypted, decrypted later), then the later stored."""
    withdrawn = {leaf.get("target") for leaf, _ in own if leaf.get("kind") == "REDACTION"}
    content = [(leaf, key) for leaf, key in own
               if leaf.get("kind") != "REDACTION" and leaf.get("eventId") not in withdrawn]
    if not content:
        return None

    def order(item):
        leaf, key = item
        holds = any(leaf.get(k) is not None for k in ("body", "msgtype", "attachment"))
        return (leaf["sentAt"], leaf.get("kind") == "EDIT", holds, key)
    return max(content, key=order)[0]


# What a message says of its sending device (senderTrust), and what the transcript shows of an
# encrypted message's (a package written before messages carried it has no senderTrust).
TRUST_LABELS = {
    "VERIFIED": "Appareil d'envoi / Sending device: vérifié / verified device",
    "UNVERIFIED_DEVICE": "Appareil d'envoi / Sending device: non vérifié / unverified device",
    "IDENTITY_CHANGED": "Appareil d'envoi / Sending device: identité changée / identity changed",
    "UNKNOWN_DEVICE": "Appareil d'envoi / Sending device: inconnu / unknown device",
    "NOT_ENCRYPTED": None,
}


def sender_trust(m):
    """The message's senderTrust (None when absent), refused when it is not one of the codes or
    contradicts its encrypted (NOT_ENCRYPTED exactly when it was not encrypted)."""
    if "senderTrust" not in m:
        return None
    trust = m["senderTrust"]
    if not isinstance(trust, str) or trust not in TRUST_LABELS:
        raise Failure(f"message {m['eventId']}: its senderTrust is not a known value")
    if (m.get("encrypted") is True) == (trust == "NOT_ENCRYPTED"):
        raise Failure(f"message {m['eventId']}: its senderTrust contradicts its encrypted")
    return trust


def verify(pkg, vkey, say):
    data = os.path.join(pkg, "data")
    log = os.path.join(data, "log")
    note = read(os.path.join(log, "checkpoint")).decode()
    origin, size, root = parse_checkpoint(verify_note(note, vkey))
    say(f"checkpoint: {origin}, size {size}, signature verified")

    info = {}
    for line in read(os.path.join(pkg, "bag-info.txt")).decode().splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    package_id = info.get("External-Identifier")
    org = info.get("Source-Organization")
    room = info.get("Bag-Group-Identifier")
    if not origin.endswith("/" + (org or "")):
        raise Failure("the checkpoint's origin is not the organisation's log")

    # 2. Every record against the checkpoint.
    records = {}
    rec_dir, proof_dir = os.path.join(log, "records"), os.path.join(log, "proofs")
    for name in sorted(os.listdir(rec_dir)):
        index = int(name)
        records[index] = read(os.path.join(rec_dir, name))
        proof_path = os.path.join(proof_dir, f"{index}.tlog-proof")
        if not os.path.exists(proof_path):
            raise Failure(f"log entry {index} has no proof")
        p_index, proof, p_note = parse_tlog_proof(read(proof_path).decode())
        if p_index != index or p_note != note:
            raise Failure(f"the proof of log entry {index} is not against data/log/checkpoint")
        if root_from_inclusion(index, size, leaf_hash(records[index]), proof) != root:
            raise Failure(f"log entry {index} is not included in the checkpoint")
    if sorted(int(n.split(".")[0]) for n in os.listdir(proof_dir)) != sorted(records):
        raise Failure("data/log/proofs and data/log/records do not match")
    parsed = {i: json.loads(b) for i, b in records.items()}
    say(f"log records: {len(records)} included in the checkpoint")

    # 3. Every version against its run's eventsRoot.
    versions = {}
    ver_dir = os.path.join(log, "versions")
    for run_name in sorted(os.listdir(ver_dir)) if os.path.isdir(ver_dir) else []:
        run = int(run_name)
        audit = parsed.get(run)
        if not audit or audit.get("type") != "AUDIT" or not audit.get("eventsRoot"):
            raise Failure(f"versions cite run {run}, whose AUDIT record is not in the package")
        events_root = bytes.fromhex(audit["eventsRoot"])
        count = audit.get("eventsCount")
        if count is None:
            raise Failure(f"the AUDIT record of run {run} has no eventsCount")
        run_dir = os.path.join(ver_dir, run_name)
        if sorted(os.listdir(run_dir)) != ["proofs.txt", "versions.jsonl"]:
            raise Failure(f"data/log/versions/{run} does not hold exactly its versions and proofs")
        with open(os.path.join(run_dir, "versions.jsonl"), "rb") as lines, \
                open(os.path.join(run_dir, "proofs.txt"), "rb") as proofs:
            for body, proof_line in itertools.zip_longest(lines, proofs):
                if body is None or proof_line is None or not body.endswith(b"\n") or body == b"\n":
                    raise Failure(f"run {run} has a version without its proof")
                body = body[:-1]
                fields = proof_line.decode().split()
                n = int(fields[0])
                if root_from_inclusion(n, count, leaf_hash(body), parse_hashes(fields[1:])) != events_root:
                    raise Failure(f"version {n} of run {run} is not included in its eventsRoot")
                if (run, n) in versions:
                    raise Failure(f"version {n} of run {run} is listed twice")
                versions[(run, n)] = json.loads(body)
    say(f"versions: {len(versions)} included in their runs' eventsRoot")

    # 4. The disclosure record.
    jsonl = read(os.path.join(data, "messages.jsonl"))
    lines = [json.loads(l) for l in jsonl.decode().splitlines() if l]
    disclosures = [
        r for r in parsed.values()
        if r.get("type") == "ACCESS" and r.get("action") == "DISCLOSE"
        and (r.get("disclosure") or {}).get("packageId") == package_id
    ]
    if len(disclosures) != 1:
        raise Failure("the package's DISCLOSE record is not in the package")
    d = disclosures[0]
    if d["disclosure"]["messagesSha256"] != hashlib.sha256(jsonl).hexdigest():
        raise Failure("data/messages.jsonl is not the one the DISCLOSE record names")
    if d.get("itemCount") != len(lines) or room not in d.get("roomIds", []) or d.get("org") != org:
        raise Failure("the DISCLOSE record does not describe this package")
    if d["disclosure"]["versionCount"] != len(versions):
        raise Failure("the DISCLOSE record's version count differs from the package's")
    say(f"disclosure record: {d['actor']} at {d['at']} ms, {len(lines)} messages")

    # 5. messages.jsonl against versions, files, records and the transcript.
    attachment_records = {r["eventId"]: r for r in parsed.values() if r.get("type") == "ATTACHMENT"}
    cited = set()
    files = 0
    for m in lines:
        eid = m["eventId"]
        sender_trust(m)
        own = []
        for v in m.get("versions") or []:
            key = (v.get("run"), v.get("position"))
            leaf = versions.get(key)
            if leaf is None:
                raise Failure(f"message {eid} cites a version not in the package")
            if key in cited:
                raise Failure(f"message {eid} cites a version another message cites")
            cited.add(key)
            for k in ("eventId", "sender", "body", "msgtype", "reason", "target"):
                if leaf.get(k) != v.get(k):
                    raise Failure(f"message {eid}: its version differs from the logged one ({k})")
            if leaf.get("kind") != v.get("kind") or eid not in (leaf.get("eventId"), leaf.get("target")):
                raise Failure(f"message {eid}: a version belongs to another message")
            own.append((leaf, key))
        latest = latest_content(own)
        if not m.get("redacted") and latest is not None and \
                (m.get("body"), m.get("msgtype")) != (latest.get("body"), latest.get("msgtype")):
            raise Failure(f"message {eid}: its content is not its latest logged version")
        a = m.get("attachment")
        if a and a.get("file"):
            data_file = read(os.path.join(data, a["file"]))
            if hashlib.sha256(data_file).hexdigest() != a["sha256"] or a["file"] != "attachments/" + a["sha256"]:
                raise Failure(f"message {eid}: its file does not match its SHA-256")
            files += 1
        if a and a.get("logIndex") is not None:
            r = parsed.get(a["logIndex"])
            if not r or r.get("type") != "ATTACHMENT" or r.get("eventId") != eid or r.get("sha256") != a.get("sha256"):
                raise Failure(f"message {eid}: its file is not the one its ATTACHMENT record names")
        elif a and a.get("file") and eid in attachment_records and attachment_records[eid]["sha256"] != a["sha256"]:
            raise Failure(f"message {eid}: its file is not the one its ATTACHMENT record names")
    if cited != set(versions):
        raise Failure("data/log/versions holds versions no message cites")
    say(f"messages.jsonl: {len(lines)} messages, {len(cited)} versions, {files} files agree with the log")

    page = Transcript()
    page.feed(read(os.path.join(data, "transcript.html")).decode())
    page.close()
    if page.forbidden:
        raise Failure("data/transcript.html holds active or external content")
    if page.order != [m["eventId"] for m in lines]:
        raise Failure("data/transcript.html and data/messages.jsonl list different messages")
    for m in lines:
        text = "".join(page.articles[m["eventId"]])
        needed = [m["sender"], m["sentAt"]] + ([m["body"]] if m.get("body") is not None else [])
        label = TRUST_LABELS.get(sender_trust(m))
        if label is not None:
            needed.append(label)
        for v in m.get("versions") or []:
            needed.append(v["sentAt"])
            if v.get("body") is not None and v["kind"] != "REDACTION":
                needed.append(v["body"])
        if m.get("redaction"):
            needed += [m["redaction"]["by"], m["redaction"]["at"]]
            if m["redaction"].get("reason"):
                needed.append(m["redaction"]["reason"])
        for s in needed:
            if s not in text:
                raise Failure(f"data/transcript.html does not show what messages.jsonl says of {m['eventId']}")
    say(f"transcript.html: {len(page.order)} messages, same as messages.jsonl")


def main():
    ap = argparse.ArgumentParser(description="Verify an Argus Tchap disclosure package offline.")
    ap.add_argument("--log-key", required=True, help="the log's signed-note verifier key NAME+HEXID+BASE64")
    ap.add_argument("package", help="the package's folder (the bag's top)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    say = (lambda _: None) if args.quiet else (lambda s: print("ok  " + s))
    try:
        verify(args.package, args.log_key, say)
    except Failure as e:
        print(f"FAIL  {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        print(f"FAIL  the package is malformed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("VERIFIED  every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
