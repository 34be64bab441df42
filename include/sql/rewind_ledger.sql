-- rewind_ledger: before a billing date's lines are replaced, move each affected
-- contract's cursor back to the first period those lines held
-- | reads invoice_lines, invoices | writes contract_ledger
update contract_ledger
set billed_before = d.first_start
from (
    select
        l.contract_id,
        min(l.period_start) as first_start
    from invoice_lines as l
    inner join invoices as i on i.invoice_id = l.invoice_id
    where i.billing_date = :billing_date
    group by l.contract_id
) as d
where
    d.contract_id = contract_ledger.contract_id
    and d.first_start < contract_ledger.billed_before
