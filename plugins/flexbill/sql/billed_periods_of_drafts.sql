-- billed_periods_of_drafts: the billed period of every line of D's drafts, in one statement (SQLite's
-- publish, while its per-row trigger flexbill_lines_inserted is set aside: the same rows that trigger adds).
-- Run right after D's new drafts and their lines are inserted: D's earlier drafts are deleted by then.
-- | reads invoice_lines, invoices | writes billed_periods
insert into billed_periods (contract_id, period_start, invoice_id)
select l.contract_id, l.period_start, l.invoice_id
from invoice_lines as l
inner join invoices as i on i.invoice_id = l.invoice_id
where i.billing_date = :billing_date and i.status = 'draft'
