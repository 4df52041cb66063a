// @ts-check
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

/*
 * Source layering: dependencies point down, inner to outer. Each folder of src/ may import only the folders
 * listed for it (and src/errors.ts); docs/architecture.md says what each layer is for. The core knows
 * neither the drivers nor the config parser: the composition root (app/) injects what it needs.
 */
const LAYERS = [
  { folder: 'base', may: [], role: 'pure BSON value helpers, the bottom layer' },
  { folder: 'schema', may: ['base'], role: 'pure schema logic; transform builds on it, never the reverse' },
  { folder: 'transform', may: ['base', 'schema'], role: 'pure document-to-row mapping' },
  {
    folder: 'core',
    may: ['base', 'schema', 'transform'],
    role: 'the domain and its ports; adapters and config are injected by app/',
  },
  {
    folder: 'bigquery',
    may: ['base', 'schema', 'transform', 'core'],
    role: 'an adapter (implements core ports)',
  },
  {
    folder: 'mongodb',
    may: ['base', 'schema', 'transform', 'core'],
    role: 'an adapter (implements core ports)',
  },
  {
    folder: 'config',
    may: ['base', 'schema', 'transform', 'core'],
    role: 'configuration parsing; it knows no adapter',
  },
  { folder: 'observability', may: ['base', 'schema', 'transform', 'core'], role: 'logs, metrics and health' },
  {
    folder: 'workers',
    may: ['base', 'schema', 'transform', 'core', 'bigquery', 'mongodb'],
    role: 'decode, map and encode on worker threads',
  },
  {
    folder: 'app',
    may: ['base', 'schema', 'transform', 'core', 'bigquery', 'mongodb', 'config', 'observability', 'workers'],
    role: 'the composition root',
  },
];
const FOLDERS = [
  'base',
  'schema',
  'transform',
  'core',
  'bigquery',
  'mongodb',
  'config',
  'observability',
  'workers',
  'app',
  'cli',
];
/**
 * Driver packages belong to their adapter alone. Bare names go in `paths` (exact match): as a gitignore-style
 * pattern, `mongodb` would also match the folder in `../mongodb/...`.
 */
const BIGQUERY_PACKAGES = { names: ['google-auth-library'], patterns: ['@google-cloud/*', '@grpc/*'] };
const MONGODB_PACKAGES = { names: ['mongodb'], patterns: ['mongodb/*'] };

/** @param {{ folder: string, may: string[], role: string }} layer */
function layerRule(layer) {
  const forbidden = FOLDERS.filter((f) => f !== layer.folder && !layer.may.includes(f));
  const allowed = layer.may.length > 0 ? layer.may.map((f) => `${f}/`).join(', ') : 'no other folder';
  // app/ is the composition root: it builds the drivers' clients and hands them to the adapters.
  const drivers =
    layer.folder === 'app'
      ? []
      : [
          ...(layer.folder === 'bigquery' ? [] : [BIGQUERY_PACKAGES]),
          ...(layer.folder === 'mongodb' ? [] : [MONGODB_PACKAGES]),
        ];
  const driverMessage = `src/${layer.folder}/ must not use a database driver or client library: they belong to ${
    layer.folder === 'bigquery' || layer.folder === 'mongodb'
      ? 'the other adapter'
      : 'the adapters (src/bigquery/, src/mongodb/)'
  }.`;
  return {
    files: [`src/${layer.folder}/**`],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: drivers.flatMap((d) => d.names.map((name) => ({ name, message: driverMessage }))),
          patterns: [
            {
              group: forbidden.flatMap((f) => [`../${f}`, `../${f}/*`]),
              message: `src/${layer.folder}/ is ${layer.role}: it may import only ${allowed} (and errors.ts). Dependencies point down (base, schema, transform, core, adapters and config, observability, workers, app, cli); inject what it needs from app/ instead.`,
            },
            ...(drivers.length === 0
              ? []
              : [{ group: drivers.flatMap((d) => d.patterns), message: driverMessage }]),
          ],
        },
      ],
    },
  };
}

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', '.peers/', '.scratch/'] },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  ...tseslint.configs.stylisticTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-non-null-assertion': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { considerDefaultExhaustiveForUnions: true },
      ],
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allowNumber: true, allowBoolean: true },
      ],
      'no-restricted-syntax': [
        'error',
        {
          selector: 'TSEnumDeclaration',
          message: 'Use an `as const` object and a union type instead of enum.',
        },
        { selector: 'ExportDefaultDeclaration', message: 'Use named exports.' },
      ],
      'no-console': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/cli/**', 'scripts/**', 'bench/**'],
    rules: { 'no-console': 'off' },
  },
  ...LAYERS.map(layerRule),
  {
    files: ['src/errors.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['./*'],
              message: 'src/errors.ts is the bottom of every layer: it imports nothing of the project.',
            },
          ],
        },
      ],
    },
  },
  { files: ['eslint.config.js'], ...tseslint.configs.disableTypeChecked },
  // Tool configuration files must export a default.
  { files: ['eslint.config.js', 'vitest.config.ts'], rules: { 'no-restricted-syntax': 'off' } },
  prettier,
);
