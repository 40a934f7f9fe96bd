-- Facts about the store itself. `store_id`: a random id, written once (Store::store_id), that
-- `confsync doctor` uses to tell whether the service at public_url runs on this store.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
