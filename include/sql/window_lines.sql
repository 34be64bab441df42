-- window_lines: existing lines of the contracts due on D, from each
-- contract's window start (its ledger cursor) on
-- | reads invoice_lines, invoices, flexbill_due (temporary)
select
    l.contract_id,
    l.period_start,
    i.billing_date
from flexbill_due as d
inner join invoice_lines as l
    on l.contract_id = d.contract_id and l.period_start >= d.lo
inner join invoices as i on i.invoice_id = l.invoice_id
