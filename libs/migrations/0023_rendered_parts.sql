-- A templated message's rendering at acceptance ({"subject", "html_body", "text_body"}), so the
-- router builds MIME from it instead of rendering the template a second time. NULL for messages
-- without a template and for rows accepted before this column existed: the router renders those.
-- Adding a nullable column without a default is a catalogue change only: no table rewrite.
ALTER TABLE messages ADD COLUMN rendered_parts jsonb;
