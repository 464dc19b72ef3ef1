"""swap in one round trip: the swap's rules and the idempotency claim as PL/pgSQL functions

A swap through the ORM cost about a dozen round trips (station, vehicle lock, battery locks,
pack types, slot, three flushes) and some 11 ms of server CPU, most of it in the ORM. The
same rules now run inside the database, called with one statement (app/swaps/repository.py
record_swap_statement); Python only turns the row it returns into the answer
(app/swaps/service.py). The rules are today's, in today's order and with today's texts:

- the station by code; unknown, a role that may not record swaps, and another operator's
  station come back as a status for Python to raise (404 / 403) with nothing written;
- a rejection is recorded as a swap_events row with its reason code and detail, holding the
  ids found up to the rule that failed, and keeps the locks it took (no EXCEPTION block: a
  subtransaction would release them and cost a savepoint);
- lock order vehicle, removed battery, then the named installed battery or the allocated
  one (FOR UPDATE SKIP LOCKED, highest SoC, then fewest cycles, then serial), so two swaps
  cannot deadlock and two swaps at one station never get the same battery;
- a completed swap moves the charged battery out of its slot first, then the depleted one
  into that slot, then the charged one into the vehicle: the unique indexes on
  batteries.slot_id / vehicle_id are checked row by row, so a place is freed before it is
  filled; and it writes the two custody_events rows app/batteries/custody.py relocate would.

Times come from the app's clock (p_now), never now(): tests shift the app clock, and now()
only stamps created_at, as everywhere else.

Revision ID: a6d2f8c4e1b9
Revises: f3c9a7d1e5b2
Create Date: 2026-12-07 07:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a6d2f8c4e1b9"
down_revision: str | None = "f3c9a7d1e5b2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The details show numbers as Python's f"{x:g}" did: six significant digits, rounded half to
# even on the double's exact binary value, trailing zeros dropped, and the exponent form below
# 1e-4 and from 1e6. PostgreSQL's float8 -> numeric cast rounds to 15 digits first, which
# turns 12.34565 (really 12.3456499999...) into a tie and rounds it the other way, so the
# exact value is rebuilt from the double's bits: mantissa * 2^e = mantissa * 5^-e / 10^-e.
FORMAT_G = """
CREATE FUNCTION swapfleet_format_g(x double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    bits bigint := ('x' || encode(float8send(x), 'hex'))::bit(64)::bigint;
    minus text := CASE WHEN bits < 0 THEN '-' ELSE '' END;
    biased int := ((bits >> 52) & 2047)::int;
    mantissa numeric := (bits & 4503599627370495)::numeric;
    pow2 int;
    exact numeric;
    fraction text;
    exp10 int;       -- the power of ten of the leading digit
    scaled numeric;
    digits numeric;  -- the six significant digits, as an integer
BEGIN
    IF x = 'NaN'::float8 THEN
        RETURN 'nan';
    ELSIF x = 'Infinity'::float8 OR x = '-Infinity'::float8 THEN
        RETURN minus || 'inf';
    ELSIF x = 0 THEN
        RETURN minus || '0';
    END IF;
    IF biased = 0 THEN
        pow2 := -1074;  -- subnormal: no implicit leading bit
    ELSE
        mantissa := mantissa + 4503599627370496;
        pow2 := biased - 1075;
    END IF;
    IF pow2 >= 0 THEN
        exact := mantissa * 2::numeric ^ pow2;
    ELSE
        exact := mantissa * 5::numeric ^ (-pow2) * ('1e' || pow2)::numeric;
    END IF;
    -- numeric's text is plain decimal, so the leading digit's place is read off it.
    IF exact >= 1 THEN
        exp10 := length(trunc(exact)::text) - 1;
    ELSE
        fraction := split_part(exact::text, '.', 2);
        exp10 := -(length(fraction) - length(ltrim(fraction, '0')) + 1);
    END IF;
    scaled := exact * ('1e' || (5 - exp10))::numeric;
    digits := trunc(scaled);
    IF scaled - digits > 0.5 OR (scaled - digits = 0.5 AND mod(digits, 2) = 1) THEN
        digits := digits + 1;
    END IF;
    IF digits = 1000000 THEN
        digits := 100000;
        exp10 := exp10 + 1;
    END IF;
    IF exp10 >= -4 AND exp10 < 6 THEN
        RETURN minus || trim_scale(digits * ('1e' || (exp10 - 5))::numeric)::text;
    END IF;
    RETURN minus || trim_scale(digits * 0.00001)::text || 'e'
        || CASE WHEN exp10 < 0 THEN '-' ELSE '+' END
        || CASE WHEN abs(exp10) < 10 THEN '0' ELSE '' END || abs(exp10)::text;
END
$$
"""

RECORD_SWAP = """
CREATE FUNCTION swapfleet_record_swap(
    p_station_code text,
    p_vin text,
    p_removed_serial text,
    p_removed_soc double precision,
    p_removed_soh double precision,
    p_installed_serial text,          -- NULL: the backend allocates one
    p_installed_soc double precision,
    p_installed_soh double precision,
    p_started_at timestamptz,         -- NULL: p_now
    p_finished_at timestamptz,        -- NULL: p_now
    p_now timestamptz,                -- the app's clock
    p_min_soh double precision,       -- settings.swap_min_soh_pct
    p_api_key_id bigint,
    p_may_write boolean,              -- the key's role may record swaps (admin, operator)
    p_operator_id bigint,             -- the operator the station must belong to; NULL: admin
    -- 'recorded', or why nothing was: 'station_not_found', 'role_forbidden', 'other_operator'
    OUT status text,
    OUT id uuid,
    OUT station_code text,
    OUT vin text,
    OUT outcome text,
    OUT reason_code text,
    OUT detail text,
    OUT removed_battery_serial text,
    OUT removed_soc_pct double precision,
    OUT removed_soh_pct double precision,
    OUT removed_to_slot_number integer,
    OUT installed_battery_serial text,
    OUT installed_soc_pct double precision,
    OUT installed_soh_pct double precision,
    OUT installed_from_slot_number integer,
    OUT started_at timestamptz,
    OUT finished_at timestamptz,
    OUT created_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    st stations%ROWTYPE;
    veh vehicles%ROWTYPE;
    removed batteries%ROWTYPE;
    installed batteries%ROWTYPE;
    from_slot slots%ROWTYPE;
    swap swap_events%ROWTYPE;
    reason text;
    why text;
    carried text;
    soc double precision;
    soh double precision;
    moved_at timestamptz;
BEGIN
    SELECT s.* INTO st FROM stations s WHERE s.code = p_station_code;
    IF NOT FOUND THEN
        status := 'station_not_found';
        RETURN;
    END IF;
    IF NOT p_may_write THEN
        status := 'role_forbidden';
        RETURN;
    END IF;
    IF p_operator_id IS NOT NULL AND st.operator_id <> p_operator_id THEN
        status := 'other_operator';
        RETURN;
    END IF;

    -- Each rule that fails sets reason and why and leaves the block; the row variables hold
    -- what was found before it, and the rejection records those ids.
    <<rules>>
    BEGIN
        IF st.status <> 'active' THEN
            reason := 'StationUnavailable';
            why := format('station %s is %s', st.code, st.status);
            EXIT rules;
        END IF;

        -- Lock order: vehicle, then removed battery, then installed battery. Every swap
        -- takes them in this order, so two swaps cannot deadlock on each other.
        SELECT v.* INTO veh FROM vehicles v WHERE v.vin = p_vin FOR UPDATE;
        IF NOT FOUND THEN
            reason := 'VehicleUnknown';
            why := format('no vehicle with VIN %s', p_vin);
            EXIT rules;
        END IF;

        SELECT b.* INTO removed FROM batteries b WHERE b.serial = p_removed_serial FOR UPDATE;
        IF NOT FOUND THEN
            reason := 'BatteryUnknown';
            why := format('no battery with serial %s', p_removed_serial);
            EXIT rules;
        END IF;
        IF removed.vehicle_id IS DISTINCT FROM veh.id THEN
            SELECT b.serial INTO carried FROM batteries b WHERE b.vehicle_id = veh.id;
            reason := 'BatteryMismatch';
            why := format(
                'battery %s is not installed in vehicle %s (the vehicle carries %s)',
                removed.serial, veh.vin, coalesce(carried, 'no battery'));
            EXIT rules;
        END IF;

        IF p_installed_serial IS NULL THEN
            -- Highest SoC first, then fewest full-equivalent cycles (wear levelling). SKIP
            -- LOCKED makes concurrent swaps at one station pass over a battery another swap
            -- is already handing out instead of waiting for it.
            SELECT b.* INTO installed
            FROM batteries b JOIN slots sl ON sl.id = b.slot_id
            WHERE sl.station_id = st.id
              AND sl.enabled
              AND b.state = 'in_service'
              AND b.pack_type_id IN (
                  SELECT mp.pack_type_id FROM vehicle_model_pack_types mp
                  WHERE mp.vehicle_model_id = veh.model_id)
              AND b.soc_pct >= st.target_soc_pct
              AND (b.soh_pct IS NULL OR b.soh_pct >= p_min_soh)
            ORDER BY b.soc_pct DESC, b.equivalent_full_cycles ASC, b.serial ASC
            LIMIT 1
            FOR UPDATE OF b SKIP LOCKED;
            IF NOT FOUND THEN
                reason := 'NoBatteryAvailable';
                why := format(
                    'station %s holds no in-service battery compatible with vehicle %s '
                    'at or above %s%% SoC and %s%% SoH',
                    st.code, veh.vin, swapfleet_format_g(st.target_soc_pct),
                    swapfleet_format_g(p_min_soh));
                EXIT rules;
            END IF;
            SELECT sl.* INTO from_slot FROM slots sl WHERE sl.id = installed.slot_id;
            EXIT rules;
        END IF;

        SELECT b.* INTO installed FROM batteries b WHERE b.serial = p_installed_serial FOR UPDATE;
        IF NOT FOUND THEN
            reason := 'BatteryUnknown';
            why := format('no battery with serial %s', p_installed_serial);
            EXIT rules;
        END IF;
        SELECT sl.* INTO from_slot FROM slots sl WHERE sl.id = installed.slot_id;
        IF NOT FOUND OR from_slot.station_id <> st.id THEN
            reason := 'BatteryNotAtStation';
            why := format('battery %s is not in a slot of %s', installed.serial, st.code);
            EXIT rules;
        END IF;
        IF NOT from_slot.enabled THEN
            reason := 'BatteryNotAtStation';
            why := format('battery %s sits in disabled slot %s of %s',
                          installed.serial, from_slot.number, st.code);
            EXIT rules;
        END IF;
        IF installed.state <> 'in_service' THEN
            reason := 'BatteryDamaged';
            why := format('battery %s is %s', installed.serial, installed.state);
            EXIT rules;
        END IF;
        IF NOT EXISTS (
            SELECT FROM vehicle_model_pack_types mp
            WHERE mp.vehicle_model_id = veh.model_id AND mp.pack_type_id = installed.pack_type_id
        ) THEN
            reason := 'BatteryType';
            why := format('battery %s''s pack type does not fit vehicle %s''s model',
                          installed.serial, p_vin);
            EXIT rules;
        END IF;
        -- The station's reading at hand-out, when given, counts instead of the stored one.
        soc := coalesce(p_installed_soc, installed.soc_pct);
        IF soc IS NULL OR soc < st.target_soc_pct THEN
            reason := 'BatterySoC';
            why := format(
                'battery %s is at %s SoC, below the station''s target %s%%',
                installed.serial,
                CASE WHEN soc IS NULL THEN 'unknown' ELSE swapfleet_format_g(soc) || '%' END,
                swapfleet_format_g(st.target_soc_pct));
            EXIT rules;
        END IF;
        soh := coalesce(p_installed_soh, installed.soh_pct);
        IF soh IS NOT NULL AND soh < p_min_soh THEN
            reason := 'BatterySoHLow';
            why := format('battery %s is at %s%% SoH, below the floor of %s%%',
                          installed.serial, swapfleet_format_g(soh),
                          swapfleet_format_g(p_min_soh));
            EXIT rules;
        END IF;
    END rules;

    IF reason IS NOT NULL THEN
        INSERT INTO swap_events AS e (
            id, station_id, vehicle_id, vin,
            removed_battery_id, removed_battery_serial, removed_soc_pct, removed_soh_pct,
            installed_battery_id, installed_battery_serial, installed_soc_pct, installed_soh_pct,
            started_at, finished_at, outcome, reason_code, detail)
        VALUES (
            gen_random_uuid(), st.id, veh.id, p_vin,
            removed.id, p_removed_serial, p_removed_soc, p_removed_soh,
            installed.id, p_installed_serial, p_installed_soc, p_installed_soh,
            coalesce(p_started_at, p_now), coalesce(p_finished_at, p_now), 'rejected',
            reason, why)
        RETURNING e.* INTO swap;
    ELSE
        moved_at := coalesce(p_finished_at, p_now);
        -- A reading counts unless the battery holds a newer one; the installed battery's own
        -- values stand in for readings the request did not give.
        IF removed.readings_at IS NULL OR removed.readings_at <= moved_at THEN
            removed.soc_pct := coalesce(p_removed_soc, removed.soc_pct);
            removed.soh_pct := coalesce(p_removed_soh, removed.soh_pct);
            IF p_removed_soc IS NOT NULL OR p_removed_soh IS NOT NULL THEN
                removed.readings_at := moved_at;
            END IF;
        END IF;
        soc := coalesce(p_installed_soc, installed.soc_pct);
        soh := coalesce(p_installed_soh, installed.soh_pct);
        IF installed.readings_at IS NULL OR installed.readings_at <= moved_at THEN
            installed.soc_pct := soc;
            installed.soh_pct := soh;
            IF soc IS NOT NULL OR soh IS NOT NULL THEN
                installed.readings_at := moved_at;
            END IF;
        END IF;

        -- The charged battery leaves its slot first, then the depleted one takes that slot and
        -- leaves the vehicle, then the charged one enters the vehicle: each statement frees a
        -- place before another fills it. location_note is cleared as relocate() clears it.
        UPDATE batteries b
        SET location_kind = 'in_transit', slot_id = NULL, soc_pct = installed.soc_pct,
            soh_pct = installed.soh_pct, readings_at = installed.readings_at, updated_at = p_now
        WHERE b.id = installed.id;
        UPDATE batteries b
        SET location_kind = 'slot', slot_id = from_slot.id, vehicle_id = NULL,
            location_note = NULL, soc_pct = removed.soc_pct, soh_pct = removed.soh_pct,
            readings_at = removed.readings_at, updated_at = p_now
        WHERE b.id = removed.id;
        UPDATE batteries b
        SET location_kind = 'vehicle', vehicle_id = veh.id, location_note = NULL
        WHERE b.id = installed.id;

        INSERT INTO swap_events AS e (
            id, station_id, vehicle_id, vin,
            removed_battery_id, removed_battery_serial, removed_soc_pct, removed_soh_pct,
            removed_to_slot_id,
            installed_battery_id, installed_battery_serial, installed_soc_pct, installed_soh_pct,
            installed_from_slot_id, started_at, finished_at, outcome)
        VALUES (
            gen_random_uuid(), st.id, veh.id, p_vin,
            removed.id, p_removed_serial, p_removed_soc, p_removed_soh, from_slot.id,
            installed.id, installed.serial, soc, soh,
            from_slot.id, coalesce(p_started_at, p_now), moved_at, 'completed')
        RETURNING e.* INTO swap;

        -- The history shows each battery's real move: vehicle -> freed slot, slot -> vehicle
        -- (not the in-transit moment above), in this order.
        INSERT INTO custody_events (
            battery_id, at, cause, from_kind, from_slot_id, from_vehicle_id,
            to_kind, to_slot_id, to_vehicle_id, state_from, state_to, swap_id, api_key_id)
        VALUES
            (removed.id, moved_at, 'swap', removed.location_kind, removed.slot_id, removed.vehicle_id,
             'slot', from_slot.id, NULL, removed.state, removed.state, swap.id, p_api_key_id),
            (installed.id, moved_at, 'swap', 'slot', from_slot.id, NULL,
             'vehicle', NULL, veh.id, installed.state, installed.state, swap.id, p_api_key_id);
        removed_to_slot_number := from_slot.number;
        installed_from_slot_number := from_slot.number;
    END IF;

    status := 'recorded';
    id := swap.id;
    station_code := st.code;
    vin := swap.vin;
    outcome := swap.outcome::text;
    reason_code := swap.reason_code;
    detail := swap.detail;
    removed_battery_serial := swap.removed_battery_serial;
    removed_soc_pct := swap.removed_soc_pct;
    removed_soh_pct := swap.removed_soh_pct;
    installed_battery_serial := swap.installed_battery_serial;
    installed_soc_pct := swap.installed_soc_pct;
    installed_soh_pct := swap.installed_soh_pct;
    started_at := swap.started_at;
    finished_at := swap.finished_at;
    created_at := swap.created_at;
END
$$
"""

# The advisory lock serialises retries with one key; the look-up then sees the record of a
# retry that held the lock and committed. That holds inside one function under READ COMMITTED
# because a VOLATILE function takes a new snapshot for each statement: the SELECT's snapshot is
# taken after the lock was granted, so after the holder's commit.
CLAIM_IDEMPOTENCY = """
CREATE FUNCTION swapfleet_claim_idempotency(
    p_api_key_id bigint,
    p_key text,
    OUT request_hash text,
    OUT status_code integer,
    OUT response_body text
) RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(p_api_key_id::text || ':' || p_key, 0));
    RETURN QUERY
        SELECT r.request_hash::text, r.status_code, r.response_body
        FROM idempotency_records r
        WHERE r.api_key_id = p_api_key_id AND r.key = p_key;
END
$$
"""


def upgrade() -> None:
    op.execute(FORMAT_G)
    op.execute(RECORD_SWAP)
    op.execute(CLAIM_IDEMPOTENCY)


def downgrade() -> None:
    op.execute("DROP FUNCTION swapfleet_claim_idempotency(bigint, text)")
    op.execute(
        "DROP FUNCTION swapfleet_record_swap(text, text, text, double precision,"
        " double precision, text, double precision, double precision, timestamptz,"
        " timestamptz, timestamptz, double precision, bigint, boolean, bigint)"
    )
    op.execute("DROP FUNCTION swapfleet_format_g(double precision)")
