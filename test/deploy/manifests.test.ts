import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_SHUTDOWN_TIMEOUT_MS } from '../../src/cli/run.js';
import {
  DEFAULT_CONFIG_PATH,
  DEFAULT_METRICS_PORT,
  loadBootstrapConfig,
} from '../../src/config/bootstrap.js';
import {
  BASE_DIR,
  EXAMPLES_DIR,
  finalStage,
  linters,
  loadYaml,
  manifestFiles,
  OVERLAYS,
  renderOverlay,
  runTool,
  stageEnv,
  type KubeObject,
  type Overlay,
} from './support.js';

/**
 * Schemas the manifests must satisfy: the oldest and the newest Kubernetes that the pinned kubernetes-validate
 * bundles. Strict mode rejects fields the schema does not know, so a misspelt field cannot slip through.
 */
const KUBERNETES_VERSIONS = ['1.25', '1.37'] as const;
/** The kubelet's SIGKILL must leave the daemon's own shutdown bound this much room at least. */
const MIN_GRACE_MARGIN_MS = 10_000;

function validate(files: readonly string[], version: string) {
  return runTool(linters().kubernetesValidate, ['--strict', '--kubernetes-version', version, ...files]);
}

function tempCopy(name: string, text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'mba-manifest-')), name);
  writeFileSync(path, text);
  return path;
}

/** The placeholder Secrets, which stand in for the real ones created with kubectl. */
function exampleSecrets(): KubeObject[] {
  return manifestFiles(EXAMPLES_DIR).flatMap((file) => loadYaml(file));
}

function objectsOf(overlay: Overlay, kind: string): KubeObject[] {
  return renderOverlay(overlay).objects.filter((o) => o.kind === kind);
}

function only(overlay: Overlay, kind: string): KubeObject {
  const [object, ...others] = objectsOf(overlay, kind);
  if (object === undefined || others.length > 0)
    throw new Error(`expected exactly one ${kind} in ${overlay}`);
  return object;
}

interface Probe {
  readonly httpGet: { readonly path: string; readonly port: string | number };
}
interface Container {
  readonly name: string;
  readonly args?: readonly string[];
  readonly env?: readonly {
    readonly name: string;
    readonly value?: string;
    readonly valueFrom?: {
      readonly secretKeyRef?: { readonly name: string; readonly key: string; readonly optional?: boolean };
    };
  }[];
  readonly ports: readonly { readonly name?: string; readonly containerPort: number }[];
  readonly startupProbe?: Probe;
  readonly livenessProbe: Probe;
  readonly readinessProbe: Probe;
  readonly volumeMounts: readonly { readonly name: string; readonly mountPath: string }[];
}
interface PodSpec {
  readonly terminationGracePeriodSeconds: number;
  readonly serviceAccountName?: string;
  readonly automountServiceAccountToken?: boolean;
  readonly securityContext: { readonly runAsNonRoot?: boolean; readonly runAsUser?: number };
  readonly containers: readonly Container[];
  readonly volumes: readonly Volume[];
}
interface Volume {
  readonly name: string;
  readonly configMap?: { readonly name: string };
  readonly secret?: { readonly secretName: string };
}

function deployment(overlay: Overlay) {
  const object = only(overlay, 'Deployment');
  const spec = object.spec as {
    replicas: number;
    strategy: { type: string; rollingUpdate?: { maxSurge: number; maxUnavailable: number } };
    template: { metadata: { annotations?: Record<string, string> }; spec: PodSpec };
  };
  const pod = spec.template.spec;
  const [container] = pod.containers;
  if (container === undefined) throw new Error('the Deployment has no container');
  const portOf = (probe: Probe) =>
    typeof probe.httpGet.port === 'number'
      ? probe.httpGet.port
      : container.ports.find((p) => p.name === probe.httpGet.port)?.containerPort;
  /** Where the container mounts the volume that `matches` picks. */
  const mountOf = (matches: (volume: Volume) => boolean) => {
    const name = pod.volumes.find(matches)?.name;
    return container.volumeMounts.find((m) => m.name === name)?.mountPath;
  };
  return { object, spec, pod, container, portOf, mountOf };
}

/** The config.json that the ConfigMap mounts, written to a file the loader can read. */
function configMapConfig(overlay: Overlay): {
  path: string;
  json: Record<string, unknown>;
  configMap: KubeObject;
} {
  const configMap = only(overlay, 'ConfigMap');
  const text = (configMap.data as Record<string, string>)['config.json'];
  if (text === undefined) throw new Error('the ConfigMap has no config.json');
  return {
    path: tempCopy('config.json', text),
    json: JSON.parse(text) as Record<string, unknown>,
    configMap,
  };
}

/**
 * The container's environment: the image's ENV, then the Deployment's values, those of a Secret taken from
 * the example Secret of that name (deploy/kubernetes/examples).
 */
function containerEnv(overlay: Overlay): Record<string, string> {
  const { container } = deployment(overlay);
  const env: Record<string, string> = { ...stageEnv(finalStage()) };
  for (const variable of container.env ?? []) {
    const ref = variable.valueFrom?.secretKeyRef;
    const value =
      ref === undefined
        ? variable.value
        : (
            exampleSecrets().find((o) => o.metadata.name === ref.name)?.stringData as
              Record<string, string> | undefined
          )?.[ref.key];
    if (value !== undefined) env[variable.name] = value;
  }
  return env;
}

describe('Kubernetes manifests', () => {
  it('are the base, the example Secrets and the overlays, each overlay rendering the same objects', () => {
    const kinds = (file: string) => loadYaml(file).map((o) => `${file}: ${o.kind}`);
    expect(manifestFiles(BASE_DIR).flatMap(kinds)).toEqual([
      'deploy/kubernetes/base/configmap.yaml: ConfigMap',
      'deploy/kubernetes/base/deployment.yaml: Deployment',
      'deploy/kubernetes/base/namespace.yaml: Namespace',
      'deploy/kubernetes/base/pod-disruption-budget.yaml: PodDisruptionBudget',
      'deploy/kubernetes/base/service-account.yaml: ServiceAccount',
    ]);
    expect(manifestFiles(EXAMPLES_DIR).flatMap(kinds)).toEqual([
      'deploy/kubernetes/examples/mongodb-secret.yaml: Secret',
      'deploy/kubernetes/examples/secret.yaml: Secret',
    ]);
    // No overlay applies a Secret: the real ones are created with kubectl, never overwritten by a placeholder.
    for (const overlay of OVERLAYS)
      expect(renderOverlay(overlay).objects.map((o) => `${o.kind} ${o.metadata.name}`)).toEqual([
        'Namespace mongo-bigquery-archiver',
        'ServiceAccount mongo-bigquery-archiver',
        'ConfigMap mongo-bigquery-archiver-configmap',
        'Deployment mongo-bigquery-archiver',
        'PodDisruptionBudget mongo-bigquery-archiver',
      ]);
  });

  it.each(KUBERNETES_VERSIONS)(
    'validate in strict mode against the Kubernetes %s schemas, as files and as each overlay renders them',
    (version) => {
      const files = [
        ...manifestFiles(BASE_DIR),
        ...manifestFiles(EXAMPLES_DIR),
        ...OVERLAYS.map((overlay) => renderOverlay(overlay).file),
      ];
      const result = validate(files, version);
      expect(result.output).not.toMatch(/ERROR|WARN/);
      expect(result.status, result.output).toBe(0);
      for (const file of files) expect(result.output).toContain(`${file} passed`);
    },
  );

  // The check above proves something only if it can fail: the same tool, on a broken copy.
  it.each([
    {
      defect: 'a misspelt field',
      from: 'terminationGracePeriodSeconds:',
      to: 'terminationGracePeriodSecond:',
    },
    { defect: 'a field of the wrong type', from: 'replicas: 2', to: 'replicas: two' },
    {
      defect: 'a required field missing',
      from: '              path: /readyz\n              port: metrics\n',
      to: '              path: /readyz\n',
    },
  ])('fail on a Deployment with $defect', ({ from, to }) => {
    const original = readFileSync(join(BASE_DIR, 'deployment.yaml'), 'utf8');
    expect(original).toContain(from);
    const broken = tempCopy('deployment.yaml', original.replace(from, to));
    const result = validate([broken], KUBERNETES_VERSIONS[1]);
    expect(result.status).not.toBe(0);
    expect(result.output).toMatch(/ERROR .*deployment\.yaml did not validate/);
  });

  it.each(OVERLAYS)('keep every object of the overlay %s in the namespace it creates', (overlay) => {
    const namespace = only(overlay, 'Namespace').metadata.name;
    for (const object of renderOverlay(overlay).objects.filter((o) => o.kind !== 'Namespace'))
      expect(object.metadata.namespace, `${object.kind} ${object.metadata.name}`).toBe(namespace);
    for (const object of exampleSecrets()) expect(object.metadata.namespace).toBe(namespace);
  });
});

describe.each(OVERLAYS)('the overlay %s agrees with the code and the Dockerfile', (overlay) => {
  it('config.json in the ConfigMap loads, and every key in it is one the archiver reads', () => {
    const { path, json } = configMapConfig(overlay);
    const config = loadBootstrapConfig({ path, env: containerEnv(overlay), explicitPath: true });
    // The loader ignores keys it does not know: a misspelt key would be silently lost.
    for (const [key, value] of Object.entries(json))
      expect(String((config as Record<string, unknown>)[key]), key).toBe(String(value));
  });

  it('probes /healthz and /readyz on the port and address the daemon listens on in the container', () => {
    const { container, portOf, spec } = deployment(overlay);
    const { path } = configMapConfig(overlay);
    const config = loadBootstrapConfig({ path, env: containerEnv(overlay), explicitPath: true });
    expect(config.METRICS_HOST).toBe('0.0.0.0');
    expect(config.METRICS_PORT).toBe(DEFAULT_METRICS_PORT);
    expect(container.livenessProbe.httpGet.path).toBe('/healthz');
    expect(container.startupProbe?.httpGet.path).toBe('/healthz');
    expect(container.readinessProbe.httpGet.path).toBe('/readyz');
    for (const probe of [container.livenessProbe, container.readinessProbe, container.startupProbe])
      expect(probe && portOf(probe)).toBe(config.METRICS_PORT);
    expect(spec.template.metadata.annotations?.['prometheus.io/port']).toBe(String(config.METRICS_PORT));
    const expose = finalStage().find((i) => i.keyword === 'EXPOSE');
    expect(expose?.args).toBe(String(config.METRICS_PORT));
  });

  it("gives SIGTERM more time than the daemon's graceful stop takes", () => {
    const { pod } = deployment(overlay);
    expect(pod.terminationGracePeriodSeconds * 1_000).toBeGreaterThanOrEqual(
      DEFAULT_SHUTDOWN_TIMEOUT_MS + MIN_GRACE_MARGIN_MS,
    );
    expect(finalStage().find((i) => i.keyword === 'STOPSIGNAL')?.args).toBe('SIGTERM');
  });

  it('mounts config.json where --config points', () => {
    const { container, mountOf } = deployment(overlay);
    const { configMap } = configMapConfig(overlay);
    const configPath = container.args?.[container.args.indexOf('--config') + 1];
    expect(configPath).toBe(DEFAULT_CONFIG_PATH);
    expect(mountOf((v) => v.configMap?.name === configMap.metadata.name)).toBe(dirname(DEFAULT_CONFIG_PATH));
    expect(Object.keys(configMap.data as object)).toContain(basename(DEFAULT_CONFIG_PATH));
  });

  it('runs the pod as its own ServiceAccount, without a Kubernetes API token', () => {
    const { pod } = deployment(overlay);
    const account = only(overlay, 'ServiceAccount');
    expect(pod.serviceAccountName).toBe(account.metadata.name);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(account.automountServiceAccountToken).toBe(false);
  });

  // Without mapping leases every replica archives every mapping: two pods at once would write each change twice.
  it('runs two replicas sharing the mappings, and rolls them one at a time without a gap', () => {
    const { spec } = deployment(overlay);
    expect(spec.replicas).toBe(2);
    expect(spec.strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
    });
  });

  it("runs as the image's non-root user", () => {
    const { pod } = deployment(overlay);
    const user = finalStage().findLast((i) => i.keyword === 'USER')?.args;
    expect(user).toMatch(/^[1-9]\d*(:\d+)?$/);
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(String(pod.securityContext.runAsUser)).toBe(user?.split(':')[0]);
  });

  // Before: `optional: true`, so a missing Secret left MONGO_CLIENT to config.json without a word.
  it('issue 10 item 20: takes MONGO_CLIENT from a required Secret, and config.json has none to fall back to', () => {
    const { container } = deployment(overlay);
    const fromSecret = container.env?.find((v) => v.name === 'MONGO_CLIENT')?.valueFrom?.secretKeyRef;
    expect(fromSecret).toEqual({
      name: 'mongo-bigquery-archiver-mongodb',
      key: 'MONGO_CLIENT',
      optional: false,
    });
    const { json, path } = configMapConfig(overlay);
    expect(json).not.toHaveProperty('MONGO_CLIENT');

    // The example Secret has that name and key, and with it config.json loads.
    const secret = exampleSecrets().find((o) => o.metadata.name === fromSecret?.name);
    const uri = (secret?.stringData as Record<string, string> | undefined)?.[fromSecret?.key ?? ''];
    expect(uri).toMatch(/^mongodb(\+srv)?:\/\//);
    const config = loadBootstrapConfig({ path, env: { MONGO_CLIENT: uri }, explicitPath: true });
    expect(config.MONGO_CLIENT).toBe(uri);
  });

  // A node drain evicts pods without a budget all at once: every mapping would wait for a new pod.
  it('issue 10 item 20: a PodDisruptionBudget keeps one pod of the Deployment through voluntary disruptions', () => {
    const { spec, object } = deployment(overlay);
    const budget = only(overlay, 'PodDisruptionBudget');
    expect(budget.apiVersion).toBe('policy/v1');
    const budgetSpec = budget.spec as {
      minAvailable?: number;
      maxUnavailable?: number;
      selector: { matchLabels: Record<string, string> };
    };
    // It selects exactly the Deployment's pods.
    const podLabels = (spec.template.metadata as { labels?: Record<string, string> }).labels ?? {};
    expect(budgetSpec.selector).toEqual((object.spec as { selector: unknown }).selector);
    for (const [label, value] of Object.entries(budgetSpec.selector.matchLabels))
      expect(podLabels[label], label).toBe(value);
    // One pod may go at a time (a drain can proceed), never both.
    expect(budgetSpec.minAvailable).toBe(spec.replicas - 1);
    expect(budgetSpec.maxUnavailable).toBeUndefined();
  });
});

describe('Google credentials', () => {
  it('key-file: mounts the key Secret where SERVICE_ACCOUNT_FILE points, readable by the pod group only', () => {
    const { mountOf, pod } = deployment('key-file');
    const { path } = configMapConfig('key-file');
    const config = loadBootstrapConfig({ path, env: containerEnv('key-file'), explicitPath: true });
    const keyFile = config.SERVICE_ACCOUNT_FILE;
    if (keyFile === undefined) throw new Error('the overlay key-file sets no SERVICE_ACCOUNT_FILE');
    const secret = exampleSecrets().find((o) =>
      Object.keys((o.stringData as object | undefined) ?? {}).includes(posix.basename(keyFile)),
    );
    if (secret === undefined) throw new Error(`no example Secret holds ${keyFile}`);
    expect(mountOf((v) => v.secret?.secretName === secret.metadata.name)).toBe(posix.dirname(keyFile));
    expect(Object.keys(secret.stringData as object)).toEqual([posix.basename(keyFile)]);
    const volume = pod.volumes.find((v) => v.secret?.secretName === secret.metadata.name);
    expect((volume?.secret as { defaultMode?: number } | undefined)?.defaultMode).toBe(0o440);
  });

  // Before: the only manifests mounted the key Secret, which Workload Identity users had to edit out.
  it('issue 13: workload-identity mounts no Secret, sets no key file, and binds the ServiceAccount to a Google one', () => {
    const { pod, container } = deployment('workload-identity');
    expect(pod.volumes.filter((v) => v.secret !== undefined)).toEqual([]);
    const { path } = configMapConfig('workload-identity');
    const env = containerEnv('workload-identity');
    expect(env).not.toHaveProperty('SERVICE_ACCOUNT_FILE');
    expect(loadBootstrapConfig({ path, env, explicitPath: true }).SERVICE_ACCOUNT_FILE).toBeUndefined();
    expect(container.env?.map((v) => v.name)).toEqual(['MONGO_CLIENT']);
    const annotations = only('workload-identity', 'ServiceAccount').metadata as {
      annotations?: Record<string, string>;
    };
    expect(annotations.annotations?.['iam.gke.io/gcp-service-account']).toMatch(
      /^[\w-]+@[\w-]+\.iam\.gserviceaccount\.com$/,
    );
  });

  it('only the ServiceAccount annotation and the key file tell the overlays apart', () => {
    const strip = (objects: readonly KubeObject[]) =>
      JSON.parse(JSON.stringify(objects), (key, value: unknown) =>
        key === 'annotations' && (value as Record<string, unknown>)['iam.gke.io/gcp-service-account']
          ? undefined
          : value,
      ) as KubeObject[];
    const identity = strip(renderOverlay('workload-identity').objects);
    // The key-file overlay's Deployment, less its key file: the environment variable, the mount, the volume.
    const keyFile = strip(renderOverlay('key-file').objects).map((object) => {
      if (object.kind !== 'Deployment') return object;
      const copy = structuredClone(object) as KubeObject & { spec: { template: { spec: PodSpec } } };
      const pod = copy.spec.template.spec as { -readonly [K in keyof PodSpec]: PodSpec[K] };
      pod.volumes = pod.volumes.filter((v) => v.name !== 'analytics-file');
      pod.containers = pod.containers.map((c) => ({
        ...c,
        env: (c.env ?? []).filter((v) => v.name !== 'SERVICE_ACCOUNT_FILE'),
        volumeMounts: c.volumeMounts.filter((m) => m.name !== 'analytics-file'),
      }));
      return copy;
    });
    expect(identity).toEqual(keyFile);
    expect(renderOverlay('key-file').objects).not.toEqual(keyFile);
  });
});
