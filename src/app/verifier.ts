import { findMappingEntry, settingsStoreOf } from './settings-lookup.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Collection, type MongoClient } from 'mongodb';
import { createBigQueryClients, type BigQueryClients } from '../bigquery/client.js';
import { type BootstrapConfig } from '../config/bootstrap.js';
import { parseMappingSettings } from '../config/settings.js';
import { BigQueryViewReader } from '../bigquery/view-reader.js';
import { TableAdmin } from '../bigquery/table-admin.js';
import { viewNames } from '../bigquery/views.js';
import { alignWithTable } from '../schema/align.js';
import { tableRef } from '../schema/identifiers.js';
import { compareClusterTime, type ClusterTime, type Position } from '../core/model.js';
import {
  SYSTEM_CLOCK,
  type Clock,
  type IdRange,
  type SnapshotSource,
  type SourceDocument,
} from '../core/ports.js';
import { type MappingSettings } from '../core/settings.js';
import {
  MAX_REPORTED_IDS,
  type MappingVerifier,
  type RangeDigest,
  type ReportedIds,
  type VerifyReport,
  type ViewReader,
} from '../core/verify-model.js';
import { ConfigError } from '../errors.js';
import { bigQueryConnection, connectMongo, connectNamingMongo } from './archiver.js';
import { currentClusterTime } from '../mongodb/change-source.js';
import { checkpointsCollectionName, encodeId, readSavedPosition } from '../mongodb/checkpoint-store.js';
import { mongoBoundary } from '../mongodb/error-mapping.js';
import { MongoSnapshotSource } from '../mongodb/snapshot-reader.js';
import { compareToBound, docIdKey, OBJECT_ID_DOC_ID } from '../transform/id-order.js';
import { compileDocumentHash } from '../transform/row-digest.js';
import { compileRowMapper, type RowMapper } from '../transform/row-mapper.js';
import { docIdString } from '../transform/values.js';

/** Ranges a verification splits the `_id` space into when not told (`verify --ranges`). */
export const DEFAULT_VERIFY_RANGES = 16;
/**
 * How long a verification waits for the mapping's checkpoint to pass the time of a read (`--settle-timeout`):
 * the daemon saves a position at least every IDLE_CHECKPOINT_INTERVAL_MS (30 s by default) even when idle,
 * so a running daemon passes it well within this.
 */
export const DEFAULT_SETTLE_TIMEOUT_MS = 120_000;
/**
 * A range is given at least about this many documents (the backfill gives each a whole chunk, 1,000): a
 * differing range is read again document by document, so smaller ranges make that cheaper.
 */
export const DEFAULT_VERIFY_MIN_RANGE_DOCUMENTS = 100;
/** How often the checkpoint is read while waiting. */
export const DEFAULT_SETTLE_POLL_MS = 1_000;
/**
 * Reads of a differing range that name ids: a difference is reported only when every one of them saw it the
 * same (the same hashes on both sides), so a document changed while verify ran is never reported.
 */
export const ID_READS = 2;

/**
 * Sub-ranges of a differing range whose BigQuery digests one query reads at most: the query's CASE grows
 * with them, and the source side of as many sub-ranges (about a chunk each) is what one batch of reads
 * that name ids holds in memory.
 */
export const MAX_SUB_RANGES_PER_QUERY = 100;

/** The two sides as the pipeline maps them now: the view's reader and the mapper, over the same columns. */
export interface VerifiedSides {
  readonly reader: ViewReader;
  /** The pipeline's mapper for the columns the table has: both sides hash the row the pipeline would write. */
  readonly mapper: RowMapper;
}

/** What a verifier needs: the ports of both sides, the mapper, and the mapping's progress. */
export interface MappingVerifierDeps {
  /** The mapping's id (its settings document's `_id` as a string), for the report. */
  readonly mapping: string;
  /** `project.dataset.<table>_view`, for the report. */
  readonly view: string;
  /** The collection as the backfill reads it (split points from a bounded sample, chunks in `_id` order). */
  readonly source: SnapshotSource;
  /**
   * The reader and mapper, resolved at the start of every verification: the columns are the ones the table
   * has then (`alignWithTable`, as `run` maps with), which evolve while the verifier is kept.
   */
  readonly sides: (signal: AbortSignal) => Promise<VerifiedSides>;
  /** The mapping's saved stream position (read only). */
  readonly position: (signal: AbortSignal) => Promise<Position | undefined>;
  /** The source's cluster time now. */
  readonly clusterTime: (signal: AbortSignal) => Promise<ClusterTime>;
  /** Default DEFAULT_VERIFY_RANGES. */
  readonly ranges?: number;
  /** Default DEFAULT_SETTLE_TIMEOUT_MS. */
  readonly settleTimeoutMs?: number;
  /** Default DEFAULT_SETTLE_POLL_MS. */
  readonly settlePollMs?: number;
  readonly clock?: Clock;
}

/** A document's `_doc_id` and the hash of its mapped row; undefined for an id verify does not place. */
export type DocumentHash = { readonly docId: string; readonly hash: bigint } | undefined;

/**
 * Maps a document with the pipeline's mapper and hashes its row: the canonical form of row-digest.ts, with
 * the content of its JSON values (JSON columns, `_unmapped`) in canonical form (`compileDocumentHash`).
 */
export function documentHasher(mapper: RowMapper): (document: SourceDocument) => DocumentHash {
  const hash = compileDocumentHash(mapper.columns);
  return (document) => {
    const docId = docIdString(document._id);
    if (docIdKey(docId) === undefined) return undefined;
    return { docId, hash: hash(mapper.map(document).row, docId) };
  };
}

/**
 * Reads one range as the backfill does (chunks in `_id` order) and digests it: count, XOR of the hashes,
 * documents with an id verify does not place, and, when `named`, each document's hash by `_doc_id`.
 * `onChunk` sees each chunk's digest as it is read: a streaming pass, holding one chunk at a time.
 */
export async function digestSourceRange(
  source: SnapshotSource,
  range: IdRange,
  rowHash: (document: SourceDocument) => DocumentHash,
  named: boolean,
  signal: AbortSignal,
  onChunk?: (chunk: { readonly count: number; readonly digest: bigint; readonly lastId: string }) => void,
): Promise<SourceRange> {
  const result: SourceRange = {
    count: 0,
    digest: 0n,
    unverifiable: 0,
    hashes: named ? new Map<string, bigint>() : undefined,
  };
  let lastId: string | undefined;
  for (;;) {
    const chunk = await source.nextChunk(range, lastId, signal);
    const last = chunk.at(-1);
    if (last === undefined) return result;
    let count = 0;
    let digest = 0n;
    for (const document of chunk) {
      const hashed = rowHash(document);
      if (hashed === undefined) {
        result.unverifiable++;
        continue;
      }
      count++;
      digest ^= hashed.hash;
      result.hashes?.set(hashed.docId, hashed.hash);
    }
    result.count += count;
    result.digest ^= digest;
    lastId = encodeId(last._id);
    onChunk?.({ count, digest, lastId });
  }
}

/** The documents of one range as MongoDB has them: count, XOR digest, and each document's hash when named. */
export interface SourceRange {
  count: number;
  digest: bigint;
  unverifiable: number;
  readonly hashes: Map<string, bigint> | undefined;
}

/** A sub-range of a range (about one chunk of MongoDB's documents), with MongoDB's count and digest. */
interface SubRange {
  readonly range: IdRange;
  readonly count: number;
  readonly digest: bigint;
}

type DifferenceKind = 'missing' | 'extra' | 'differing';

/** One document that differs in a read: what kind, and the hashes each side had (undefined: absent). */
interface Difference {
  readonly kind: DifferenceKind;
  readonly source: bigint | undefined;
  readonly view: bigint | undefined;
}

/** The verifier of one mapping (see MappingVerifier); the daemon's background verifier and `verify` use it. */
export function createMappingVerifier(deps: MappingVerifierDeps): MappingVerifier {
  return new Verifier(deps);
}

/** What one verification has found so far: counts, a bounded list of ids per kind, the ranges that differ. */
class Findings {
  readonly counts: Record<DifferenceKind, number> = { missing: 0, extra: 0, differing: 0 };
  readonly ids: Record<DifferenceKind, string[]> = { missing: [], extra: [], differing: [] };
  readonly ranges: IdRange[] = [];

  add(range: IdRange, differences: ReadonlyMap<string, Difference>): void {
    if (differences.size === 0) return;
    this.ranges.push(range);
    for (const [docId, difference] of differences) {
      this.counts[difference.kind]++;
      const ids = this.ids[difference.kind];
      ids.push(docId);
      // Keeps the smallest ids, as a sorted list cut at MAX_REPORTED_IDS would, without holding them all.
      if (ids.length > 2 * MAX_REPORTED_IDS)
        ids.splice(0, ids.length, ...ids.sort().slice(0, MAX_REPORTED_IDS));
    }
  }

  reported(kind: DifferenceKind): ReportedIds {
    return { count: this.counts[kind], ids: [...this.ids[kind]].sort().slice(0, MAX_REPORTED_IDS) };
  }
}

class Verifier implements MappingVerifier {
  readonly #d: MappingVerifierDeps;
  readonly #clock: Clock;
  /** Where the next share of ranges starts (`verify({ share })`), kept across runs. */
  #cursor = 0;

  constructor(deps: MappingVerifierDeps) {
    this.#d = deps;
    this.#clock = deps.clock ?? SYSTEM_CLOCK;
  }

  /**
   * The first read compares every range's count and digest (MongoDB range by range, one chunk in memory at
   * a time, then BigQuery in one query once the daemon has written what MongoDB showed); it also keeps
   * each chunk's digest, with MongoDB's ids as bounds. A range that differs is compared again over those
   * sub-ranges (BigQuery's digests per sub-range), and only the sub-ranges that differ are read document
   * by document, ID_READS times, so memory holds a batch of sub-ranges, never a whole range, and
   * `differingRanges` are sub-ranges of about a chunk each.
   */
  async verify(
    options: { readonly ranges?: number; readonly share?: number },
    signal: AbortSignal,
  ): Promise<VerifyReport> {
    const startedAt = new Date(this.#clock.now());
    const { reader, mapper } = await this.#d.sides(signal);
    const rowHash = documentHasher(mapper);
    const ranges = this.#choose(
      await this.#split(options.ranges ?? this.#d.ranges ?? DEFAULT_VERIFY_RANGES, signal),
      options.share,
    );
    let bytesScanned = 0;
    const wait = { settled: true };
    const settle = async (time: ClusterTime): Promise<void> => {
      // Once the checkpoint did not pass a time within the timeout, later reads do not wait again.
      if (wait.settled) wait.settled = await this.#waitForCheckpoint(time, signal);
    };
    const viewDigests = async (of: readonly IdRange[]): Promise<RangeDigest[]> => {
      const answer = await reader.rangeDigests(of, signal);
      bytesScanned += answer.bytesScanned;
      return answer.value;
    };

    let documentsChecked = 0;
    let unverifiable = 0;
    const first: { range: IdRange; count: number; digest: bigint; subRanges: SubRange[] }[] = [];
    for (const range of ranges) {
      const subRanges: SubRange[] = [];
      let after = range.after;
      const read = await digestSourceRange(this.#d.source, range, rowHash, false, signal, (chunk) => {
        subRanges.push({ range: { after, upTo: chunk.lastId }, count: chunk.count, digest: chunk.digest });
        after = chunk.lastId;
      });
      // The last sub-range runs to the range's own end: what the view has past MongoDB's last id is in it.
      const last = subRanges.pop();
      subRanges.push({
        range: { after: last?.range.after ?? range.after, upTo: range.upTo },
        count: last?.count ?? 0,
        digest: last?.digest ?? 0n,
      });
      documentsChecked += read.count;
      unverifiable += read.unverifiable;
      first.push({ range, count: read.count, digest: read.digest, subRanges });
    }
    await settle(await this.#d.clusterTime(signal));
    const answer = await viewDigests(ranges);
    const suspects: SubRange[] = [];
    for (const [i, checked] of first.entries()) {
      const view = answer[i];
      if (sameDigest(view, checked)) continue;
      for (let at = 0; at < checked.subRanges.length; at += MAX_SUB_RANGES_PER_QUERY) {
        const batch = checked.subRanges.slice(at, at + MAX_SUB_RANGES_PER_QUERY);
        const digests =
          batch.length === 1
            ? [view ?? { count: 0, digest: 0n }]
            : await viewDigests(batch.map((b) => b.range));
        suspects.push(...batch.filter((sub, j) => !sameDigest(digests[j], sub)));
      }
    }

    // The sub-ranges that differed, read again (ID_READS times) document by document on both sides, a batch
    // at a time; a difference persists when every read saw it with the same hashes.
    const findings = new Findings();
    for (let at = 0; at < suspects.length; at += MAX_SUB_RANGES_PER_QUERY) {
      const batch = suspects.slice(at, at + MAX_SUB_RANGES_PER_QUERY).map((sub) => sub.range);
      let persisting: Map<string, Difference>[] | undefined;
      /** Each sub-range's ids on either side, in the last read. */
      let ids: string[][] = [];
      for (let read = 0; read < ID_READS; read++) {
        const sources: Map<string, bigint>[] = [];
        for (const range of batch) {
          const named = await digestSourceRange(this.#d.source, range, rowHash, true, signal);
          sources.push(named.hashes ?? new Map<string, bigint>());
        }
        await settle(await this.#d.clusterTime(signal));
        const seen: Map<string, Difference>[] = [];
        ids = [];
        for (const [i, range] of batch.entries()) {
          const view = await reader.documentDigests(range, signal);
          bytesScanned += view.bytesScanned;
          const source = sources[i] ?? new Map<string, bigint>();
          seen.push(compare(source, view.value));
          ids.push([...source.keys(), ...view.value.map((d) => d.docId)]);
        }
        persisting = seen.map((s, i) => {
          const before = persisting?.[i];
          return before === undefined ? s : intersect(before, s);
        });
      }
      for (const [i, range] of batch.entries()) {
        const differences = persisting?.[i] ?? new Map<string, Difference>();
        findings.add(narrowed(range, ids[i] ?? [], differences), differences);
      }
    }

    return {
      mapping: this.#d.mapping,
      view: this.#d.view,
      startedAt,
      finishedAt: new Date(this.#clock.now()),
      rangesChecked: ranges.length,
      differingRanges: findings.ranges,
      documentsChecked,
      missing: findings.reported('missing'),
      extra: findings.reported('extra'),
      differing: findings.reported('differing'),
      bytesScanned,
      ...(unverifiable > 0 && { unverifiable }),
      ...(!wait.settled && { settled: false }),
    };
  }

  /**
   * The backfill's split, with the last range open upwards: the backfill ends it at the greatest `_id` when
   * it starts (later documents are the stream's), but verify must compare every document there is.
   */
  async #split(parts: number, signal: AbortSignal): Promise<IdRange[]> {
    const ranges = [...(await this.#d.source.split(Math.max(1, Math.floor(parts)), signal))];
    const last = ranges.at(-1);
    if (last) ranges[ranges.length - 1] = { after: last.after, upTo: undefined };
    return ranges;
  }

  /** All ranges, or a share of them taken in turn from where the previous run's share ended. */
  #choose(ranges: IdRange[], share: number | undefined): IdRange[] {
    if (share === undefined || share >= 1 || ranges.length === 0) return ranges;
    const take = Math.min(ranges.length, Math.max(1, Math.ceil(share * ranges.length)));
    const start = this.#cursor % ranges.length;
    this.#cursor = start + take;
    return Array.from({ length: take }, (_, i) => ranges[(start + i) % ranges.length]).filter(
      (range): range is IdRange => range !== undefined,
    );
  }

  /** Waits until the saved position passes `time`; false when it did not within the settle timeout. */
  async #waitForCheckpoint(time: ClusterTime, signal: AbortSignal): Promise<boolean> {
    const deadline = this.#clock.now() + (this.#d.settleTimeoutMs ?? DEFAULT_SETTLE_TIMEOUT_MS);
    for (;;) {
      const position = await this.#d.position(signal);
      if (position && compareClusterTime(position.clusterTime, time) >= 0) return true;
      if (this.#clock.now() >= deadline) return false;
      await sleep(this.#d.settlePollMs ?? DEFAULT_SETTLE_POLL_MS, undefined, { signal });
    }
  }
}

/**
 * The part of a sub-range that holds its differences: from the id before the first one that differs (of
 * either side's ids, in BSON order) to the last one that differs, so that a repair copies those documents
 * and the few between them, not the whole chunk. The sub-range itself when nothing differs.
 */
function narrowed(
  range: IdRange,
  ids: readonly string[],
  differences: ReadonlyMap<string, unknown>,
): IdRange {
  if (differences.size === 0) return range;
  const keyed = [...new Set(ids)].flatMap((docId) => {
    const key = docIdKey(docId);
    return key === undefined ? [] : [{ docId, key }];
  });
  keyed.sort((a, b) => compareToBound(a.key, b.key));
  const first = keyed.findIndex((k) => differences.has(k.docId));
  const last = keyed.findLastIndex((k) => differences.has(k.docId));
  const before = first > 0 ? keyed[first - 1] : undefined;
  const end = keyed[last];
  if (first < 0 || end === undefined) return range;
  return {
    after: before === undefined ? range.after : boundOf(before.docId),
    upTo: boundOf(end.docId),
  };
}

/** A range bound (canonical Extended JSON of `{ id }`, as `encodeId` writes it) for a placed `_doc_id`. */
function boundOf(docId: string): string {
  return OBJECT_ID_DOC_ID.test(docId) ? `{"id":{"$oid":"${docId}"}}` : `{"id":${docId}}`;
}

/** Whether the view's count and digest of a range are MongoDB's. */
function sameDigest(view: RangeDigest | undefined, source: RangeDigest): boolean {
  return view?.count === source.count && view.digest === source.digest;
}

/** The documents that differ between a range's source hashes and the view's. */
function compare(
  source: ReadonlyMap<string, bigint>,
  view: readonly { readonly docId: string; readonly hash: bigint }[],
): Map<string, Difference> {
  const out = new Map<string, Difference>();
  const inView = new Map(view.map((d) => [d.docId, d.hash]));
  for (const [docId, hash] of source) {
    const other = inView.get(docId);
    if (other === undefined) out.set(docId, { kind: 'missing', source: hash, view: undefined });
    else if (other !== hash) out.set(docId, { kind: 'differing', source: hash, view: other });
  }
  for (const [docId, hash] of inView) {
    if (!source.has(docId)) out.set(docId, { kind: 'extra', source: undefined, view: hash });
  }
  return out;
}

/** The differences both reads saw alike: same kind, same hashes on each side. */
function intersect(
  a: ReadonlyMap<string, Difference>,
  b: ReadonlyMap<string, Difference>,
): Map<string, Difference> {
  const out = new Map<string, Difference>();
  for (const [docId, x] of a) {
    const y = b.get(docId);
    if (y?.kind === x.kind && y.source === x.source && y.view === x.view) out.set(docId, x);
  }
  return out;
}

/** What `mappingVerifierFor` wires a verifier from. */
export interface MappingVerifierWiring {
  readonly mongo: MongoClient;
  readonly bigquery: BigQueryClients;
  /** The dataset of mappings that name none (BIGQUERY_DATASET). */
  readonly defaultDataset: string;
  readonly location?: string;
  readonly settings: MappingSettings;
  /** Where the checkpoints are kept (checkpointsCollectionName). */
  readonly checkpoints: Collection;
  readonly options?: Pick<MappingVerifierDeps, 'ranges' | 'settleTimeoutMs' | 'settlePollMs'>;
}

/**
 * A verifier over a mapping's collection and `<table>_view`, with the mapping's columns (as saved in its
 * settings document) aligned with the history table as `run` aligns them (`alignWithTable`: the table's type
 * wins, a column of a type the archiver cannot write is left out), and `capture_unmapped`, so both sides
 * hash the rows the pipeline writes. The table is read at the start of every verification. A mapping whose
 * columns are not saved yet (inferred, never run), or whose table does not exist, cannot be verified.
 */
export function mappingVerifierFor(wiring: MappingVerifierWiring): MappingVerifier {
  const { settings, mongo } = wiring;
  const columns = settings.columns;
  if (columns === undefined || columns.length === 0) {
    throw new ConfigError(
      `mapping "${settings.id}" has no columns in its settings document yet (they are saved once the archiver has run it): nothing to verify against`,
    );
  }
  const location = wiring.location !== undefined ? { location: wiring.location } : {};
  const target = {
    bigquery: wiring.bigquery.bigquery,
    projectId: wiring.bigquery.projectId,
    datasetId: settings.bigqueryDataset ?? wiring.defaultDataset,
  };
  const admin = new TableAdmin(target);
  const sides = async (signal: AbortSignal): Promise<VerifiedSides> => {
    signal.throwIfAborted();
    const fields = await admin.historyTableFields(settings.bigqueryTable);
    if (fields === undefined) {
      throw new ConfigError(
        `mapping "${settings.id}": table ${target.datasetId}.${settings.bigqueryTable} does not exist yet: nothing to verify against`,
      );
    }
    const aligned = alignWithTable(columns, fields).columns;
    return {
      reader: new BigQueryViewReader({
        ...target,
        ...location,
        table: settings.bigqueryTable,
        columns: aligned,
      }),
      mapper: compileRowMapper(aligned, { captureUnmapped: settings.captureUnmapped }),
    };
  };
  const view = tableRef(target.projectId, target.datasetId, viewNames(settings.bigqueryTable).view);
  const collection = mongo.db(settings.mongoDatabase).collection(settings.mongoCollection);
  return createMappingVerifier({
    mapping: settings.id,
    view: `${view.projectId}.${view.datasetId}.${view.tableId}`,
    source: new MongoSnapshotSource(collection, { minRangeDocuments: DEFAULT_VERIFY_MIN_RANGE_DOCUMENTS }),
    sides,
    position: (signal) => readSavedPosition(wiring.checkpoints, settings.documentId, signal),
    clusterTime: (signal) => mongoBoundary(() => currentClusterTime(mongo, signal)),
    ...(wiring.options ?? {}),
  });
}

/** A verifier of one mapping with the clients it opened; `close` ends them. */
export interface OpenedVerifier {
  readonly verifier: MappingVerifier;
  close(): Promise<void>;
}

/**
 * Connects to MongoDB and BigQuery as the configuration says and builds the verifier of `mapping` (its
 * settings document's `_id` as a string, as `status` shows it). Nothing is written anywhere.
 */
export async function openMappingVerifier(
  config: BootstrapConfig,
  mapping: string,
  options: Pick<MappingVerifierDeps, 'ranges' | 'settleTimeoutMs'> = {},
): Promise<OpenedVerifier> {
  const mongo = connectMongo(config);
  let bigquery: BigQueryClients | undefined;
  try {
    await connectNamingMongo(mongo, config.MONGO_CLIENT);
    const entry = await findMappingEntry(settingsStoreOf(mongo, config), config, mapping);
    const settings = parseMappingSettings(entry.document);
    bigquery = await createBigQueryClients(bigQueryConnection(config));
    const verifier = mappingVerifierFor({
      mongo,
      bigquery,
      defaultDataset: config.BIGQUERY_DATASET,
      settings,
      checkpoints: mongo
        .db(config.SETTINGS_DATABASE)
        .collection(checkpointsCollectionName(config.SETTINGS_COLLECTION)),
      options,
    });
    const clients = bigquery;
    return {
      verifier,
      close: async () => {
        await clients.close();
        await mongo.close();
      },
    };
  } catch (error) {
    await bigquery?.close();
    await mongo.close();
    throw error;
  }
}
