-- source changes (SQLite): every insert, update or delete of a source table (and of event_voids) counts
-- in flexbill_state 'source_changes', so a rerun of a date can tell in O(1) that nothing it reads changed
-- (flexbill.db.fingerprint).  SQLite has one writer at a time and no way to skip triggers: the count is exact.
-- Idempotent: init-db runs it on every call.

drop trigger if exists flexbill_changed_locations_insert;
create trigger flexbill_changed_locations_insert after insert on locations
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_locations_update;
create trigger flexbill_changed_locations_update after update on locations
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_locations_delete;
create trigger flexbill_changed_locations_delete after delete on locations
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_customers_insert;
create trigger flexbill_changed_customers_insert after insert on customers
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_customers_update;
create trigger flexbill_changed_customers_update after update on customers
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_customers_delete;
create trigger flexbill_changed_customers_delete after delete on customers
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_plans_insert;
create trigger flexbill_changed_plans_insert after insert on plans
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_plans_update;
create trigger flexbill_changed_plans_update after update on plans
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_plans_delete;
create trigger flexbill_changed_plans_delete after delete on plans
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_contracts_insert;
create trigger flexbill_changed_contracts_insert after insert on contracts
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_contracts_update;
create trigger flexbill_changed_contracts_update after update on contracts
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_contracts_delete;
create trigger flexbill_changed_contracts_delete after delete on contracts
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_suspension_events_insert;
create trigger flexbill_changed_suspension_events_insert after insert on suspension_events
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_suspension_events_update;
create trigger flexbill_changed_suspension_events_update after update on suspension_events
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_suspension_events_delete;
create trigger flexbill_changed_suspension_events_delete after delete on suspension_events
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_crm_boards_insert;
create trigger flexbill_changed_crm_boards_insert after insert on crm_boards
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_boards_update;
create trigger flexbill_changed_crm_boards_update after update on crm_boards
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_boards_delete;
create trigger flexbill_changed_crm_boards_delete after delete on crm_boards
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_crm_stages_insert;
create trigger flexbill_changed_crm_stages_insert after insert on crm_stages
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_stages_update;
create trigger flexbill_changed_crm_stages_update after update on crm_stages
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_stages_delete;
create trigger flexbill_changed_crm_stages_delete after delete on crm_stages
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_crm_stage_entries_insert;
create trigger flexbill_changed_crm_stage_entries_insert after insert on crm_stage_entries
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_stage_entries_update;
create trigger flexbill_changed_crm_stage_entries_update after update on crm_stage_entries
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_crm_stage_entries_delete;
create trigger flexbill_changed_crm_stage_entries_delete after delete on crm_stage_entries
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;

drop trigger if exists flexbill_changed_event_voids_insert;
create trigger flexbill_changed_event_voids_insert after insert on event_voids
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_event_voids_update;
create trigger flexbill_changed_event_voids_update after update on event_voids
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
drop trigger if exists flexbill_changed_event_voids_delete;
create trigger flexbill_changed_event_voids_delete after delete on event_voids
begin
    insert into flexbill_state (name, value) values ('source_changes', 1)
        on conflict (name) do update set value = value + 1;
end;
