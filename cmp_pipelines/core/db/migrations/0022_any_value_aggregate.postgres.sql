-- any_value(x): some value of the group, as DuckDB and PostgreSQL 16+ have it built in; created only where the
-- server lacks it (Debian 12 ships PostgreSQL 15), so the workflow dispatcher's shared SQL runs unchanged.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'any_value' AND prokind = 'a') THEN
        CREATE FUNCTION cmp_any_value_step(state anyelement, value anyelement) RETURNS anyelement
            LANGUAGE SQL IMMUTABLE AS 'SELECT coalesce(state, value)';
        CREATE AGGREGATE any_value(anyelement) (SFUNC = cmp_any_value_step, STYPE = anyelement);
    END IF;
END
$$;
