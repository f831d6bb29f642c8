-- StreamEvents and ListEvents resume "after seq N" within a tenant. A bigserial alone does not make
-- that safe: two transactions can take seq 10 and 11 and commit 11 first, and a reader that saw 11
-- would skip 10 for good. So every insert takes a per-tenant transaction lock before it draws its
-- seq: within a tenant, events become visible in seq order. The lock lives in a trigger so that
-- every writer of events (the recorder, and any later one) gets it. Tenants do not wait on each
-- other (apart from a hash collision, which only serialises two of them).
CREATE FUNCTION events_in_tenant_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- 0x5057 ('PW') keeps these locks apart from other two-key advisory locks.
    PERFORM pg_advisory_xact_lock(x'5057'::int, hashtext(NEW.tenant_id::text));
    NEW.seq := nextval(pg_get_serial_sequence('events', 'seq'));
    RETURN NEW;
END
$$;

CREATE TRIGGER events_in_tenant_order BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_in_tenant_order();
