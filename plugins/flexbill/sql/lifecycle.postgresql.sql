-- lifecycle (PostgreSQL): finalized invoices, their lines and credit notes never change, and a
-- (contract, period) has at most one line on invoices that are not credited (billed_periods' key)
-- | guards invoices, invoice_lines, credit_notes | writes billed_periods
-- Idempotent: init-db runs it on every call.  Bulk paths (a run's lines, a rerun deleting drafts)
-- go through statement-level triggers with transition tables; finalizing drafts calls no function
-- (the row triggers only fire for rows that are not drafts).

create or replace function flexbill_refuse() returns trigger language plpgsql as $$
begin
    raise exception 'flexbill: % on % refused: %', tg_op, tg_table_name, tg_argv[0]
        using errcode = 'integrity_constraint_violation';
end $$;

-- invoices: a draft changes freely; a finalized invoice may only become credited, nothing else
create or replace function flexbill_invoice_update() returns trigger language plpgsql as $$
begin
    if old.status = 'finalized' and new.status = 'credited'
       and exists (select 1 from credit_notes where credit_notes.invoice_id = old.invoice_id)
       and (new.invoice_id, new.customer_id, new.location_id, new.billing_date, new.currency, new.subtotal,
            new.tax, new.total, new.number, new.finalized_at, new.finalized_by, new.corrects)
           is not distinct from
           (old.invoice_id, old.customer_id, old.location_id, old.billing_date, old.currency, old.subtotal,
            old.tax, old.total, old.number, old.finalized_at, old.finalized_by, old.corrects) then
        return new;
    end if;
    raise exception 'flexbill: invoice % is % and never changes (only finalized -> credited, by a correction that issues its credit note first)',
        old.invoice_id, old.status using errcode = 'integrity_constraint_violation';
end $$;

drop trigger if exists flexbill_invoice_update on invoices;
create trigger flexbill_invoice_update before update on invoices
    for each row when (old.status <> 'draft' or new.status = 'credited')
    execute function flexbill_invoice_update();

drop trigger if exists flexbill_invoice_delete on invoices;
create trigger flexbill_invoice_delete before delete on invoices
    for each row when (old.status <> 'draft')
    execute function flexbill_refuse('a finalized or credited invoice is never deleted; correct it with a rerun');

-- an invoice credited: its lines are no longer live
create or replace function flexbill_invoice_credited() returns trigger language plpgsql as $$
begin
    delete from billed_periods where invoice_id = new.invoice_id;
    return null;
end $$;

drop trigger if exists flexbill_invoice_credited on invoices;
create trigger flexbill_invoice_credited after update on invoices
    for each row when (old.status <> 'credited' and new.status = 'credited')
    execute function flexbill_invoice_credited();

-- invoice_lines: added only to drafts (each adds its live period), never updated, deleted only with their draft
create or replace function flexbill_lines_inserted() returns trigger language plpgsql as $$
begin
    if exists (select 1 from new_lines as n inner join invoices as i on i.invoice_id = n.invoice_id
               where i.status <> 'draft') then
        raise exception 'flexbill: a line cannot be added to a finalized or credited invoice'
            using errcode = 'integrity_constraint_violation';
    end if;
    insert into billed_periods (contract_id, period_start, invoice_id)
    select contract_id, period_start, invoice_id from new_lines;
    return null;
end $$;

drop trigger if exists flexbill_lines_inserted on invoice_lines;
create trigger flexbill_lines_inserted after insert on invoice_lines
    referencing new table as new_lines
    for each statement execute function flexbill_lines_inserted();

create or replace function flexbill_lines_deleted() returns trigger language plpgsql as $$
begin
    if exists (select 1 from old_lines as o inner join invoices as i on i.invoice_id = o.invoice_id
               where i.status <> 'draft') then
        raise exception 'flexbill: a line of a finalized or credited invoice is never deleted'
            using errcode = 'integrity_constraint_violation';
    end if;
    delete from billed_periods as b
    using old_lines as o
    where b.contract_id = o.contract_id and b.period_start = o.period_start and b.invoice_id = o.invoice_id;
    return null;
end $$;

drop trigger if exists flexbill_lines_deleted on invoice_lines;
create trigger flexbill_lines_deleted after delete on invoice_lines
    referencing old table as old_lines
    for each statement execute function flexbill_lines_deleted();

drop trigger if exists flexbill_lines_update on invoice_lines;
create trigger flexbill_lines_update before update on invoice_lines
    for each statement execute function flexbill_refuse('invoice lines are never updated');

-- billed_periods: kept by the triggers above only; a live line keeps its row
create or replace function flexbill_billed_deleted() returns trigger language plpgsql as $$
begin
    if exists (select 1 from old_claims as o
               inner join invoice_lines as l
                   on l.invoice_id = o.invoice_id and l.contract_id = o.contract_id
                   and l.period_start = o.period_start
               inner join invoices as i on i.invoice_id = l.invoice_id
               where i.status <> 'credited') then
        raise exception 'flexbill: billed_periods keeps the live lines; it changes only with them'
            using errcode = 'integrity_constraint_violation';
    end if;
    return null;
end $$;

drop trigger if exists flexbill_billed_deleted on billed_periods;
create trigger flexbill_billed_deleted after delete on billed_periods
    referencing old table as old_claims
    for each statement execute function flexbill_billed_deleted();

drop trigger if exists flexbill_billed_update on billed_periods;
create trigger flexbill_billed_update before update on billed_periods
    for each statement execute function flexbill_refuse('billed_periods is kept by flexbill''s triggers');

-- credit notes are never changed or deleted
drop trigger if exists flexbill_credit_notes_change on credit_notes;
create trigger flexbill_credit_notes_change before update or delete on credit_notes
    for each row execute function flexbill_refuse('a credit note never changes');

-- TRUNCATE bypasses row triggers: refuse it where finalized documents would go
create or replace function flexbill_truncate() returns trigger language plpgsql as $$
begin
    if exists (select 1 from invoices where status <> 'draft') or exists (select 1 from credit_notes) then
        raise exception 'flexbill: TRUNCATE % refused: finalized invoices and credit notes never go', tg_table_name
            using errcode = 'integrity_constraint_violation';
    end if;
    return null;
end $$;

drop trigger if exists flexbill_truncate on invoices;
create trigger flexbill_truncate before truncate on invoices
    for each statement execute function flexbill_truncate();
drop trigger if exists flexbill_truncate on invoice_lines;
create trigger flexbill_truncate before truncate on invoice_lines
    for each statement execute function flexbill_truncate();
drop trigger if exists flexbill_truncate on billed_periods;
create trigger flexbill_truncate before truncate on billed_periods
    for each statement execute function flexbill_truncate();
drop trigger if exists flexbill_truncate on credit_notes;
create trigger flexbill_truncate before truncate on credit_notes
    for each statement execute function flexbill_truncate();
