-- What a key may do: `addon` (the add-on's calls and the status), `read-only` (status and the
-- admin listings), `admin` (everything, the admin changes included). Keys made before scopes
-- keep what they could do: `addon`.
ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'addon';
