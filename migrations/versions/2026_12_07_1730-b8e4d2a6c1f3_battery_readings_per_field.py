"""battery readings per field: each derived reading with its own measured-at time and source,
and a lifetime history given at registration

batteries had one readings_at for SoC, SoH and cycles together, and the ingest updated a field
only when its record was newer than readings_at: SoC readings (every few minutes) and swaps
moved it past the health records (once a charge), so most cycle and SoH updates were skipped
(issue 14). Each field now has its own measured-at time, and a reading replaces a field only
when it is at least as new as that field's time, whatever the other fields did. Columns on
batteries rather than a separate table: allocation orders by cycles inside the swap function,
the API reads one row per battery, and three fields do not need a key-value table.

- soc_measured_at, soh_measured_at, cycles_measured_at: when the reading was taken (the
  record's ts, or the swap's end); NULL for a value given at registration, so any device
  reading replaces it.
- soh_source ('registration', 'health_record', 'swap'), cycles_source ('registration',
  'health_record'): where the value came from; NULL when nothing was given.
- registered_energy_throughput_kwh, registered_capacity_throughput_ah: what the battery had
  done before it was registered, when the registrant knew it, so that lifetime figures are
  lifetime.

readings_at stays, as the newest of the per-field times.

Existing rows are backfilled: SoH and cycles from each battery's newest health record, SoC's
time from readings_at. swapfleet_record_swap (a6d2f8c4e1b9) is replaced by the same function
that compares per-field times and only stamps readings the request gave; its previous text is
kept here for the downgrade.

Revision ID: b8e4d2a6c1f3
Revises: 0e8798c22d89
Create Date: 2026-12-07 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8e4d2a6c1f3"
down_revision: str | None = "0e8798c22d89"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL = """
UPDATE batteries b
SET soh_pct = h.soh_pct, soh_measured_at = h.ts, soh_source = 'health_record',
    equivalent_full_cycles = h.cycle_count, cycles_measured_at = h.ts,
    cycles_source = 'health_record', readings_at = greatest(b.readings_at, h.ts)
FROM (
    SELECT DISTINCT ON (battery_serial) battery_serial, ts, soh_pct, cycle_count
    FROM health_records ORDER BY battery_serial, ts DESC
) h
WHERE h.battery_serial = b.serial
"""

RECORD_SWAP = """
CREATE OR REPLACE FUNCTION swapfleet_record_swap(
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
        -- Each reading the station gave counts unless the battery holds a newer reading of
        -- that field (per-field times, migration b8e4d2a6c1f3); a value the request did not
        -- give is not a reading, so it never restamps the stored one.
        IF p_removed_soc IS NOT NULL
           AND (removed.soc_measured_at IS NULL OR removed.soc_measured_at <= moved_at) THEN
            removed.soc_pct := p_removed_soc;
            removed.soc_measured_at := moved_at;
            removed.readings_at := greatest(removed.readings_at, moved_at);
        END IF;
        IF p_removed_soh IS NOT NULL
           AND (removed.soh_measured_at IS NULL OR removed.soh_measured_at <= moved_at) THEN
            removed.soh_pct := p_removed_soh;
            removed.soh_measured_at := moved_at;
            removed.soh_source := 'swap';
            removed.readings_at := greatest(removed.readings_at, moved_at);
        END IF;
        -- The installed battery's own values stand in for readings the request did not give
        -- (in the swap's record, not as new readings).
        soc := coalesce(p_installed_soc, installed.soc_pct);
        soh := coalesce(p_installed_soh, installed.soh_pct);
        IF p_installed_soc IS NOT NULL
           AND (installed.soc_measured_at IS NULL OR installed.soc_measured_at <= moved_at) THEN
            installed.soc_pct := p_installed_soc;
            installed.soc_measured_at := moved_at;
            installed.readings_at := greatest(installed.readings_at, moved_at);
        END IF;
        IF p_installed_soh IS NOT NULL
           AND (installed.soh_measured_at IS NULL OR installed.soh_measured_at <= moved_at) THEN
            installed.soh_pct := p_installed_soh;
            installed.soh_measured_at := moved_at;
            installed.soh_source := 'swap';
            installed.readings_at := greatest(installed.readings_at, moved_at);
        END IF;

        -- The charged battery leaves its slot first, then the depleted one takes that slot and
        -- leaves the vehicle, then the charged one enters the vehicle: each statement frees a
        -- place before another fills it. location_note is cleared as relocate() clears it.
        UPDATE batteries b
        SET location_kind = 'in_transit', slot_id = NULL, soc_pct = installed.soc_pct,
            soc_measured_at = installed.soc_measured_at, soh_pct = installed.soh_pct,
            soh_measured_at = installed.soh_measured_at, soh_source = installed.soh_source,
            readings_at = installed.readings_at, updated_at = p_now
        WHERE b.id = installed.id;
        UPDATE batteries b
        SET location_kind = 'slot', slot_id = from_slot.id, vehicle_id = NULL,
            location_note = NULL, soc_pct = removed.soc_pct,
            soc_measured_at = removed.soc_measured_at, soh_pct = removed.soh_pct,
            soh_measured_at = removed.soh_measured_at, soh_source = removed.soh_source,
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

# a6d2f8c4e1b9's function, restored by the downgrade.
PREVIOUS_RECORD_SWAP = """
CREATE OR REPLACE FUNCTION swapfleet_record_swap(
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


def upgrade() -> None:
    op.add_column("batteries", sa.Column("soc_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("soh_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("soh_source", sa.String(length=16)))
    op.add_column("batteries", sa.Column("cycles_measured_at", sa.DateTime(timezone=True)))
    op.add_column("batteries", sa.Column("cycles_source", sa.String(length=16)))
    op.add_column("batteries", sa.Column("registered_energy_throughput_kwh", sa.Double()))
    op.add_column("batteries", sa.Column("registered_capacity_throughput_ah", sa.Double()))
    op.create_check_constraint(
        op.f("ck_batteries_soh_source_known"),
        "batteries",
        "soh_source IN ('registration', 'health_record', 'swap')",
    )
    op.create_check_constraint(
        op.f("ck_batteries_cycles_source_known"),
        "batteries",
        "cycles_source IN ('registration', 'health_record')",
    )
    op.create_check_constraint(
        op.f("ck_batteries_registered_throughput_nonnegative"),
        "batteries",
        "(registered_energy_throughput_kwh IS NULL OR registered_energy_throughput_kwh >= 0)"
        " AND (registered_capacity_throughput_ah IS NULL"
        " OR registered_capacity_throughput_ah >= 0)",
    )
    op.execute(
        "UPDATE batteries SET soc_measured_at = readings_at WHERE soc_pct IS NOT NULL;"
        " UPDATE batteries SET soh_source = 'registration' WHERE soh_pct IS NOT NULL;"
        " UPDATE batteries SET cycles_source = 'registration'"
    )
    op.execute(BACKFILL)
    op.execute(RECORD_SWAP)


def downgrade() -> None:
    op.execute(PREVIOUS_RECORD_SWAP)
    for name in ("registered_throughput_nonnegative", "cycles_source_known", "soh_source_known"):
        op.drop_constraint(op.f(f"ck_batteries_{name}"), "batteries", type_="check")
    for column in (
        "registered_capacity_throughput_ah",
        "registered_energy_throughput_kwh",
        "cycles_source",
        "cycles_measured_at",
        "soh_source",
        "soh_measured_at",
        "soc_measured_at",
    ):
        op.drop_column("batteries", column)
