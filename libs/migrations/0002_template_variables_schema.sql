-- template: an optional JSON Schema (as JSON text; '' for none) that a send's variables must meet.
ALTER TABLE template_versions ADD COLUMN variables_schema text NOT NULL DEFAULT '';
