-- template: layouts and partials. kind: 1 message, 2 layout, 3 partial (postwire.v1.TemplateKind).
ALTER TABLE templates ADD COLUMN kind smallint NOT NULL DEFAULT 1;
-- Names a version extends/includes/imports, so renders fetch dependencies without parsing and
-- a delete can tell whether a live template still needs the one being deleted.
ALTER TABLE template_versions ADD COLUMN refs text[] NOT NULL DEFAULT '{}';
-- submission: the template, layout and partial versions a templated send was accepted with
-- (serialised postwire.v1.TemplateVersionUsed list, JSON), so the router builds exactly those.
ALTER TABLE messages ADD COLUMN template_versions jsonb;
