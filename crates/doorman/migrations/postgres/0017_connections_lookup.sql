-- A person's connections to one resource in the order the vault takes them (the active one
-- first): the lookup reads them straight from the index, with no sort of its own.
CREATE INDEX connections_lookup ON connections (user_id, resource, selected_at DESC, created_at DESC, id);
DROP INDEX connections_person;
