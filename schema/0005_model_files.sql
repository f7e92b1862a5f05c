-- bitsweep results database, version 5: uploaded models live as files beside the database.
--
-- models.in_file = 1: the model's bytes are the file <database>-models/<hash>.onnx (written a
-- chunk at a time while the upload streams in, so no model is ever whole in memory) and
-- models.bytes is empty. Rows from before this version keep their bytes in the table (in_file 0)
-- and are served from there.
ALTER TABLE models ADD COLUMN in_file INTEGER NOT NULL DEFAULT 0;
