-- template: drafts. latest_version is now the newest *published* version (0 while there is none);
-- head_version is the newest version of any kind, the base for the next edit.
ALTER TABLE template_versions ADD COLUMN draft boolean NOT NULL DEFAULT false;
ALTER TABLE templates ADD COLUMN head_version integer;
UPDATE templates SET head_version = latest_version;
ALTER TABLE templates ALTER COLUMN head_version SET NOT NULL;
