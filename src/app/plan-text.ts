import { additionText } from '../bigquery/table-plan.js';
import { type BackfillEstimate, type MappingPlan, type ViewScan } from './plan.js';
import { type SampleFindings } from './plan-sample.js';

/** What run does with a column whose type differs from the table's (src/app/schema-coordinator.ts). */
const CONFLICT_ADVICE = [
  "run maps this column with the table's type (values that do not fit go to _unmapped) and reports the",
  "difference in the mapping's lastFailure; to archive with the declared type, set a new bigquery_table,",
  "or declare the column with the table's type to silence this",
];

/** The plan of one mapping as `plan` prints it: the DDL, the table diff, the sample, the backfill, the scans. */
export function planText(plan: MappingPlan): string {
  return [
    `mapping ${plan.mapping}: ${plan.source} -> ${plan.target}${plan.dryrun ? ' (dryrun: true)' : ''}`,
    '',
    ddlSection(plan),
    '',
    diffSection(plan),
    '',
    sampleSection(plan.sample, plan.columnsFrom),
    '',
    backfillSection(plan.backfill),
    '',
    scanSection(plan.scans),
  ].join('\n');
}

function ddlSection(plan: MappingPlan): string {
  const blocks = plan.tables.steps.map((step) => {
    if (step.sql === undefined) return `-- ${step.note ?? step.kind}`;
    return `${step.note === undefined ? '' : `-- ${step.note}\n`}${step.sql};`;
  });
  if (blocks.length === 0) blocks.push('-- nothing: every object exists as run would make it');
  return [
    'DDL that run would send:',
    '',
    ...blocks.flatMap((b) => [b, '']),
    ...plan.tables.notes.map((n) => `-- ${n}`),
  ].join('\n');
}

function diffSection(plan: MappingPlan): string {
  const { diff, problems } = plan.tables;
  const table = plan.target.split('.').pop() ?? plan.target;
  const lines = ['Table diff:', ...problems.map((p) => `  ! ${p}`)];
  if (diff.kind === 'create') {
    lines.push(`  ${table} does not exist: created as above`);
    return lines.join('\n');
  }
  lines.push(`  ${table} exists`);
  lines.push(...diff.additions.map((a) => `  + ${additionText(a)}`));
  lines.push(...diff.relax.map((path) => `  ~ ${path}: REQUIRED to NULLABLE`));
  for (const conflict of diff.conflicts)
    lines.push(`  ! ${conflict}`, ...CONFLICT_ADVICE.map((l) => `    ${l}`));
  if (diff.additions.length + diff.relax.length + diff.conflicts.length === 0) lines.push('  no changes');
  return lines.join('\n');
}

function sampleSection(sample: SampleFindings, columnsFrom: MappingPlan['columnsFrom']): string {
  const lines = [
    `Sample: ${count(sample.documents, 'document')} (columns ${columnsFrom === 'declared' ? 'from the settings' : 'inferred from this sample, not saved'})`,
  ];
  if (sample.unmapped.length === 0) lines.push('  nothing lands in _unmapped');
  for (const f of sample.unmapped) {
    const why = f.reason === 'no-column' ? 'no column' : `does not fit ${f.column ?? 'its column'}`;
    lines.push(`  _unmapped: ${f.path} (${why}; ${count(f.documents, 'document')}; ${f.kinds.join(', ')})`);
  }
  if (sample.unmappedNotListed > 0) lines.push(`  ... and ${String(sample.unmappedNotListed)} more paths`);
  if (sample.overLimits.length === 0) lines.push('  no row over BigQuery limits');
  for (const o of sample.overLimits) lines.push(`  over limit (${o.limit}): _doc_id ${o.docId}: ${o.detail}`);
  if (sample.overLimitsNotListed > 0) lines.push(`  ... and ${String(sample.overLimitsNotListed)} more rows`);
  return lines.join('\n');
}

function backfillSection(backfill: BackfillEstimate | undefined): string {
  if (backfill === undefined) return 'Backfill: none (backfill_full_collection is off)';
  const size =
    backfill.bytes === undefined
      ? 'size unknown (the server gave no statistics and the sample was empty)'
      : `${bytesText(backfill.bytes)} (${backfill.bytesSource ?? 'estimate'})`;
  const p = backfill.price;
  const cost =
    backfill.costUsd === undefined || backfill.costAfterFreeTierUsd === undefined
      ? 'unknown'
      : `${usd(backfill.costUsd)}, or ${usd(backfill.costAfterFreeTierUsd)} if nothing else used this month's free tier`;
  return [
    `Backfill: ${count(backfill.documents, 'document')} (estimatedDocumentCount), ${size}`,
    `  ingestion cost: ${cost}`,
    `  at the Storage Write API list price of ${p.asOf}: $${String(p.usdPerGiB)} per GiB after the first ${String(p.freeTiBPerMonth)} TiB per month free`,
  ].join('\n');
}

function scanSection(scans: readonly ViewScan[]): string {
  return [
    'View scans (SELECT * FROM the view):',
    ...scans.map((s) => {
      const bytes = s.bytes === undefined ? 'unknown' : bytesText(s.bytes);
      const how =
        s.source === 'dry-run'
          ? 'BigQuery dry run'
          : s.source === 'history-table-size'
            ? 'upper bound'
            : 'no estimate';
      return `  ${s.view}: ${bytes} (${how}${s.note === undefined ? '' : `; ${s.note}`})`;
    }),
  ].join('\n');
}

function count(n: number, noun: string): string {
  return `${n.toLocaleString('en-US')} ${noun}${n === 1 ? '' : 's'}`;
}

function bytesText(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0
    ? `${String(bytes)} B`
    : `${value.toFixed(1)} ${units[unit] ?? ''} (${bytes.toLocaleString('en-US')} bytes)`;
}

function usd(amount: number): string {
  return amount > 0 && amount < 0.01 ? 'less than $0.01' : `$${amount.toFixed(2)}`;
}
