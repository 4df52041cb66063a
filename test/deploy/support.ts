import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { inject } from 'vitest';
import { REPO_ROOT } from '../../scripts/peers/paths.js';

export { REPO_ROOT };
export const MANIFESTS_DIR = join(REPO_ROOT, 'deploy', 'kubernetes');
/** What every overlay shares; applied through an overlay only. */
export const BASE_DIR = join(MANIFESTS_DIR, 'base');
export const EXAMPLES_DIR = join(MANIFESTS_DIR, 'examples');
/** PodMonitor and PrometheusRule, for clusters with the Prometheus Operator. */
export const MONITORING_DIR = join(MANIFESTS_DIR, 'monitoring');
export const DASHBOARD = join(REPO_ROOT, 'deploy', 'grafana', 'mongo-bigquery-archiver.json');
/** The two ways to give the archiver its Google credentials, one kustomize overlay each. */
export const OVERLAYS = ['key-file', 'workload-identity'] as const;
export type Overlay = (typeof OVERLAYS)[number];
export const DOCKERFILE = join(REPO_ROOT, 'Dockerfile');
export const HADOLINT_CONFIG = join(REPO_ROOT, '.hadolint.yaml');

export const linters = () => inject('deployLinters');

export interface ToolResult {
  readonly status: number | null;
  /** Standard output and standard error together, for assertions and failure messages. */
  readonly output: string;
  readonly stdout: string;
}

export function runTool(command: string, args: readonly string[], input?: string): ToolResult {
  const result = spawnSync(command, [...args], { encoding: 'utf8', input, timeout: 60_000, cwd: REPO_ROOT });
  if (result.error) throw result.error;
  return { status: result.status, output: `${result.stdout}${result.stderr}`, stdout: result.stdout };
}

/**
 * The YAML files under `dir`, as paths relative to the repository; kustomization files are left out (they
 * are kustomize's input, not objects).
 */
export function manifestFiles(dir = MANIFESTS_DIR): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => /\.ya?ml$/.test(name) && !/(^|\/)kustomization\.ya?ml$/.test(name))
    .map((name) => relative(REPO_ROOT, join(dir, name)))
    .sort();
}

export interface Rendered {
  /** A file holding kustomize's output, for the linters. */
  readonly file: string;
  readonly objects: KubeObject[];
}

const renderedDirs = new Map<string, Rendered>();

/** `kustomize build` of a folder under deploy/kubernetes (an overlay, or `monitoring`): what `kubectl apply -k` would apply. */
export function render(dir: string): Rendered {
  const cached = renderedDirs.get(dir);
  if (cached) return cached;
  const result = runTool(linters().kustomize, ['build', dir]);
  if (result.status !== 0) throw new Error(`kustomize build ${dir} failed: ${result.output}`);
  const name = relative(MANIFESTS_DIR, dir).replaceAll('/', '-');
  const file = join(mkdtempSync(join(tmpdir(), 'mba-kustomize-')), `${name}.yaml`);
  writeFileSync(file, result.stdout);
  const rendered = { file, objects: loadYaml(file) };
  renderedDirs.set(dir, rendered);
  return rendered;
}

export function renderOverlay(overlay: Overlay): Rendered {
  return render(join(MANIFESTS_DIR, 'overlays', overlay));
}

/** A Kubernetes object, loosely typed: the schema check is kubernetes-validate's job, not this one's. */
export interface KubeObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { readonly name: string; readonly namespace?: string };
  readonly [field: string]: unknown;
}

const parsed = new Map<string, KubeObject[]>();

/** The documents of a YAML file, parsed by PyYAML from the linters' venv (no YAML parser among our dependencies). */
export function loadYaml(path: string): KubeObject[] {
  const cached = parsed.get(path);
  if (cached) return cached;
  const script = 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))';
  const result = runTool(linters().python, ['-c', script, path]);
  if (result.status !== 0) throw new Error(`cannot parse ${path}: ${result.output}`);
  const documents = (JSON.parse(result.stdout) as (KubeObject | null)[]).filter((doc) => doc !== null);
  parsed.set(path, documents);
  return documents;
}

export interface DockerInstruction {
  readonly keyword: string;
  readonly args: string;
}

/**
 * The instructions of the Dockerfile's last stage (the image that runs), with continuation lines joined
 * and comments dropped. Enough for our own Dockerfile; not a general parser (no heredocs, no escape directive).
 */
export function finalStage(path = DOCKERFILE): DockerInstruction[] {
  const logical = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('#'))
    .join('\n')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '');
  const instructions = logical.map((line) => {
    const [keyword = '', ...rest] = line.split(/\s+/);
    return { keyword: keyword.toUpperCase(), args: rest.join(' ') };
  });
  const lastFrom = instructions.map((i) => i.keyword).lastIndexOf('FROM');
  return instructions.slice(lastFrom);
}

/** `ENV A=1 B=2` pairs of a stage (values without spaces or quotes, as ours are). */
export function stageEnv(stage: readonly DockerInstruction[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { keyword, args } of stage) {
    if (keyword !== 'ENV') continue;
    for (const pair of args.split(/\s+/)) {
      const at = pair.indexOf('=');
      if (at > 0) env[pair.slice(0, at)] = pair.slice(at + 1);
    }
  }
  return env;
}

/** The metric names a PromQL expression selects, or why it does not parse. */
export type PromqlVerdict = { readonly names: readonly string[] } | { readonly error: string };

// Walks promql-parser's tree down to the vector selectors (a range vector holds one, as `vector_selector`).
const PROMQL_NAMES_SCRIPT = `
import json, sys, promql_parser
CHILDREN = ('lhs', 'rhs', 'expr', 'param', 'args', 'vector_selector')
def names(node, out):
    if type(node).__name__ == 'VectorSelector':
        out.append(node.name or '')
        return
    for attribute in CHILDREN:
        value = getattr(node, attribute, None)
        for child in (value if isinstance(value, list) else [value]):
            if child is not None and not isinstance(child, (str, int, float, bool)):
                names(child, out)
verdicts = []
for expr in json.load(sys.stdin):
    try:
        found = []
        names(promql_parser.parse(expr), found)
        verdicts.append({'names': found})
    except Exception as error:
        verdicts.append({'error': str(error)})
print(json.dumps(verdicts))
`;

/** Parses each expression with promql-parser (the linters' venv), Prometheus's own grammar. */
export function promqlMetricNames(exprs: readonly string[]): PromqlVerdict[] {
  const result = runTool(linters().python, ['-c', PROMQL_NAMES_SCRIPT], JSON.stringify(exprs));
  if (result.status !== 0) throw new Error(`promql-parser failed: ${result.output}`);
  return JSON.parse(result.stdout) as PromqlVerdict[];
}
