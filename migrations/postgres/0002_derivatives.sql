-- Reduced copies (pyramid levels) of each image, built in the background after
-- registration or import: NULL = not built yet; '#<time>' = being built since <time> (a
-- claim; claims sort before every other value, hence the byte collation); 'none' = none
-- will be built; otherwise the pyramid's text form, e.g. 'jpeg 6028x3391 640x360 2560x1440'.
ALTER TABLE files ADD COLUMN derivatives TEXT COLLATE "C";
CREATE INDEX files_derivatives ON files (derivatives);
