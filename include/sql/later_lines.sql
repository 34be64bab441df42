-- later_lines: lines written by runs for dates after D for periods
-- starting on or before it (only an out-of-order rerun finds any)
-- | reads invoice_lines, invoices
select
    l.contract_id,
    l.period_start
from invoice_lines as l
inner join invoices as i on i.invoice_id = l.invoice_id
where
    i.billing_date > :billing_date
    and l.period_start <= :billing_date
