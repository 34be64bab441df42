-- later_lines: lines written by runs for D itself (a previous run of D, which the
-- publish replaces) or later dates, for periods starting on or before D; such
-- contracts are looked at over their whole history whatever their ledger cursor says
-- | reads invoice_lines, invoices
select
    l.contract_id,
    l.period_start
from invoice_lines as l
inner join invoices as i on i.invoice_id = l.invoice_id
where
    i.billing_date >= :billing_date
    and l.period_start <= :billing_date
