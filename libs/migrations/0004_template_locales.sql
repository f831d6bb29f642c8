-- template: locale variants of a version as JSON {"fr": {"subject": ..., "html_body": ..., "text_body": ...}}.
ALTER TABLE template_versions ADD COLUMN locales text NOT NULL DEFAULT '{}';
