-- window_lines: live lines (on invoices that are not credited) of the contracts due
-- on D, from each contract's window start (its ledger cursor) on
-- | reads billed_periods, invoices, flexbill_due (temporary)
select
    b.contract_id,
    b.period_start,
    i.billing_date
from flexbill_due as d
inner join billed_periods as b
    on b.contract_id = d.contract_id and b.period_start >= d.lo
inner join invoices as i on i.invoice_id = b.invoice_id
