-- template: MJML source for the HTML part ('' when the version is written in HTML).
ALTER TABLE template_versions ADD COLUMN mjml_body text NOT NULL DEFAULT '';
