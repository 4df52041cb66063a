import { MongoClient, type TopologyDescriptionChangedEvent } from 'mongodb';
import { errorMessage, networkFailureReason } from '../errors.js';
import { MONGO_CODES, codeOf } from './error-mapping.js';

/** A host list: names, addresses (IPv6 in brackets), ports, commas, up to the path or the options. */
const HOST_LIST = /^[A-Za-z0-9.\-:,[\]%_]+(?=$|[/?])/;

/**
 * The hosts of a connection string, as an operator would name them (`mongo-0:27017,mongo-1:27017`, or the
 * SRV name of a `mongodb+srv://` string), without user, password or options: safe to print. The hosts
 * follow the first `@` after which a host list stands (a password may hold `@` unencoded, and options may
 * hold it too, after the hosts).
 */
export function mongoHosts(uri: string): string {
  const rest = uri.replace(/^mongodb(\+srv)?:\/\//, '');
  for (let from = 0; from <= rest.length; from = rest.indexOf('@', from) + 1) {
    const hosts = HOST_LIST.exec(rest.slice(from))?.[0];
    if (hosts !== undefined) return hosts;
    if (!rest.includes('@', from)) break;
  }
  return 'the configured host';
}

/** What an error says about the server's identity check, read from its text (the driver keeps no code). */
const TLS_FAILURE = /certificate|SSL|TLS|self[- ]signed/i;

/**
 * One line for an operator about a MongoDB connection that failed: which server, why, and what to check.
 * `MongoDB at 127.0.0.1:1 unreachable (connection refused): check MONGO_CLIENT and that the server is
 * running`. Never prints the connection string (only its hosts), so no credential reaches the line.
 */
export function describeMongoConnectFailure(error: unknown, uri: string, timeoutMs: number): string {
  const at = `MongoDB at ${mongoHosts(uri)}`;
  const code = codeOf(error);
  if (code === MONGO_CODES.AuthenticationFailed || /authentication failed/i.test(errorMessage(error))) {
    return `${at} refused the credentials (authentication failed): check the user, password and authSource in MONGO_CLIENT`;
  }
  const reason = networkFailureReason(error);
  if (reason !== undefined) {
    return `${at} unreachable (${reason}): check MONGO_CLIENT and that the server is running and reachable from here`;
  }
  if (TLS_FAILURE.test(errorMessage(error))) {
    return `${at} unreachable (TLS: ${errorMessage(error)}): check the tls options of MONGO_CLIENT and the server's certificate`;
  }
  if (/timed out|timeout/i.test(errorMessage(error))) {
    return `${at} did not answer within ${formatSeconds(timeoutMs)}: check MONGO_CLIENT, that the server is running and that no firewall drops the connection`;
  }
  return `${at} failed: ${errorMessage(error)}: check MONGO_CLIENT and that the server is running`;
}

/** `10 s`, `0.5 s`. */
export function formatSeconds(ms: number): string {
  return `${String(Math.round(ms / 100) / 10)} s`;
}

/**
 * One line for an operator about an operation MongoDB refused after connecting (`what`: `read the settings
 * collection archive.settings`), with the fix for what it can name: a missing privilege, a server that
 * cannot do change streams.
 */
export function describeMongoRefusal(error: unknown, what: string, privilege: string): string {
  const code = codeOf(error);
  const message = errorMessage(error);
  if (code === MONGO_CODES.Unauthorized || /not authorized|unauthorized/i.test(message)) {
    return `MongoDB refused to ${what} (not authorized): grant the user of MONGO_CLIENT ${privilege}`;
  }
  if (/only supported on replica sets|replica set/i.test(message) && /change ?stream/i.test(message)) {
    return `MongoDB cannot ${what}: change streams need a replica set or a sharded cluster (${message})`;
  }
  return `MongoDB could not ${what}: ${message}`;
}

/**
 * Connects `client`, and fails as soon as every server it knows of has failed to answer (a refused
 * connection, an unknown host) instead of waiting out serverSelectionTimeoutMS: the driver would go on
 * trying them until then. While one server is still untried or answers, it waits as the driver does, so a
 * replica set with one member down connects. The error is the driver's own (its first server's).
 */
export async function connectFailingFast(client: MongoClient): Promise<void> {
  let onChange: ((event: TopologyDescriptionChangedEvent) => void) | undefined;
  const allFailed = new Promise<never>((_, reject) => {
    onChange = (event) => {
      const servers = [...event.newDescription.servers.values()];
      if (servers.length === 0 || servers.some((server) => server.error === null)) return;
      reject(servers[0]?.error ?? new Error('every server failed'));
    };
    client.on('topologyDescriptionChanged', onChange);
  });
  const connecting = client.connect();
  // Whichever loses the race settles unobserved: its outcome is the other's.
  connecting.catch(() => undefined);
  allFailed.catch(() => undefined);
  try {
    await Promise.race([connecting, allFailed]);
  } finally {
    if (onChange) client.off('topologyDescriptionChanged', onChange);
  }
}

/**
 * Why the driver would refuse `uri` when the archiver starts (an unescaped character in the password, a port
 * out of range, an option value it does not take), in the driver's words with the password taken out;
 * undefined when it takes it. The driver parses a connection string when a client is made, without
 * connecting (an SRV lookup waits for the connection), so this contacts nothing.
 */
export function connectionStringProblem(uri: string): string | undefined {
  try {
    new MongoClient(uri);
    return undefined;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    const password = /^mongodb(?:\+srv)?:\/\/[^@/]*?:([^@/]*)@/.exec(uri)?.[1];
    const shown = password ? reason.split(password).join('***') : reason;
    return `is not a valid connection string (${shown})`;
  }
}
