DROP TABLE pending_redactions;
DROP TABLE pending_edits;
