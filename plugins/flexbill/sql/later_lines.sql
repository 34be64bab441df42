-- later_lines: live lines (on invoices that are not credited) written for D itself (a
-- previous run of D, which the publish replaces or keeps) or later dates, for periods
-- starting on or before D; such contracts are looked at over their whole history
-- whatever their ledger cursor says
-- | reads billed_periods, invoices
select
    b.contract_id,
    b.period_start
from billed_periods as b
inner join invoices as i on i.invoice_id = b.invoice_id
where
    i.billing_date >= :billing_date
    and b.period_start <= :billing_date
