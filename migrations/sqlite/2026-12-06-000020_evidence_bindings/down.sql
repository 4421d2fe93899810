DROP TABLE version_redactions;
ALTER TABLE run_versions DROP COLUMN without_content;
