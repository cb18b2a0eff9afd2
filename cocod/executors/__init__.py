"""What runs the ops: local files, splitter, embedder, Postgres target."""
