-- lifecycle (SQLite): finalized invoices, their lines and credit notes never change, and a
-- (contract, period) has at most one line on invoices that are not credited (billed_periods' key)
-- | guards invoices, invoice_lines, credit_notes | writes billed_periods
-- Idempotent: init-db runs it on every call (each trigger dropped and created again: an upgrade gets the new rules).  The same rules as lifecycle.postgresql.sql, as row triggers.

-- invoices: a draft changes freely; a finalized invoice may only become credited, nothing else
drop trigger if exists flexbill_invoice_update;
create trigger flexbill_invoice_update before update on invoices
when (old.status <> 'draft' or new.status = 'credited') and not (
    old.status = 'finalized' and new.status = 'credited'
    and exists (select 1 from credit_notes where credit_notes.invoice_id = old.invoice_id)
    and new.invoice_id is old.invoice_id and new.customer_id is old.customer_id
    and new.location_id is old.location_id and new.billing_date is old.billing_date
    and new.currency is old.currency and new.subtotal is old.subtotal and new.tax is old.tax
    and new.total is old.total and new.number is old.number and new.finalized_at is old.finalized_at
    and new.finalized_by is old.finalized_by and new.corrects is old.corrects)
begin
    select raise(abort, 'flexbill: a finalized or credited invoice never changes (only finalized -> credited, by a correction that issues its credit note first)');
end;

drop trigger if exists flexbill_invoice_delete;
create trigger flexbill_invoice_delete before delete on invoices
when old.status <> 'draft'
begin
    select raise(abort, 'flexbill: a finalized or credited invoice is never deleted; correct it with a rerun');
end;

-- an invoice credited: its lines are no longer live
drop trigger if exists flexbill_invoice_credited;
create trigger flexbill_invoice_credited after update of status on invoices
when old.status <> 'credited' and new.status = 'credited'
begin
    delete from billed_periods where invoice_id = new.invoice_id;
end;

-- invoice_lines: added only to drafts (each adds its live period), never updated, deleted only with their draft
drop trigger if exists flexbill_lines_insert;
create trigger flexbill_lines_insert before insert on invoice_lines
when (select status from invoices where invoice_id = new.invoice_id) is not 'draft'
begin
    select raise(abort, 'flexbill: a line can only be added to a draft invoice');
end;

drop trigger if exists flexbill_lines_inserted;
create trigger flexbill_lines_inserted after insert on invoice_lines
begin
    insert into billed_periods (contract_id, period_start, invoice_id)
    values (new.contract_id, new.period_start, new.invoice_id);
end;

drop trigger if exists flexbill_lines_delete;
create trigger flexbill_lines_delete before delete on invoice_lines
when (select status from invoices where invoice_id = old.invoice_id) in ('finalized', 'credited')
begin
    select raise(abort, 'flexbill: a line of a finalized or credited invoice is never deleted');
end;

drop trigger if exists flexbill_lines_deleted;
create trigger flexbill_lines_deleted after delete on invoice_lines
begin
    delete from billed_periods
    where contract_id = old.contract_id and period_start = old.period_start and invoice_id = old.invoice_id;
end;

drop trigger if exists flexbill_lines_update;
create trigger flexbill_lines_update before update on invoice_lines
begin
    select raise(abort, 'flexbill: invoice lines are never updated');
end;

-- billed_periods: kept by the triggers above only; a live line keeps its row
drop trigger if exists flexbill_billed_delete;
create trigger flexbill_billed_delete before delete on billed_periods
when exists (select 1 from invoice_lines as l inner join invoices as i on i.invoice_id = l.invoice_id
             where l.invoice_id = old.invoice_id and l.contract_id = old.contract_id
             and l.period_start = old.period_start and i.status <> 'credited')
begin
    select raise(abort, 'flexbill: billed_periods keeps the live lines; it changes only with them');
end;

drop trigger if exists flexbill_billed_update;
create trigger flexbill_billed_update before update on billed_periods
begin
    select raise(abort, 'flexbill: billed_periods is kept by flexbill''s triggers');
end;

-- credit notes are never changed or deleted
drop trigger if exists flexbill_credit_notes_update;
create trigger flexbill_credit_notes_update before update on credit_notes
begin
    select raise(abort, 'flexbill: a credit note never changes');
end;

drop trigger if exists flexbill_credit_notes_delete;
create trigger flexbill_credit_notes_delete before delete on credit_notes
begin
    select raise(abort, 'flexbill: a credit note is never deleted');
end;
