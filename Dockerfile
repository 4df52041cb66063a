# The archiver's image: `docker build -t mongo-bigquery-archiver:0.1.0 .` (docs/deploy.md).
# One base for every stage, so that pinning it (a digest, see docs/deploy.md) is a one-line change.
FROM node:24-trixie-slim AS base
WORKDIR /app

# Compiles the TypeScript. Install scripts are skipped: only esbuild has one, for tsx and vitest, not tsc.
FROM base AS build
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
# The build leaves out the demo and the test peers' launcher it brings (tsconfig.build.json).
COPY src ./src
RUN npm run build

# Production dependencies only. The two install scripts among them (protobufjs, core-js) are not needed.
FROM base AS deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM base
LABEL org.opencontainers.image.title="mongo-bigquery-archiver" \
      org.opencontainers.image.description="Archives MongoDB collections into BigQuery through change streams" \
      org.opencontainers.image.licenses="MIT"
# The health and metrics server must listen beyond loopback for the kubelet's probes and Prometheus.
ENV NODE_ENV=production \
    METRICS_HOST=0.0.0.0
# Owned by root and read-only to the process; package.json carries `"type": "module"`.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The image's `node` user, numeric so that Kubernetes' runAsNonRoot can check it.
USER 1000:1000
EXPOSE 9464
# Node runs as PID 1 without an init: `run` handles SIGTERM itself (flush, checkpoint, exit within 30 s)
# and starts no child processes, so there are no zombies to reap.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "--max-semi-space-size=64", "--no-allocation-site-pretenuring", "dist/src/main.js"]
# Reads /config-local/config.json when it exists, as the original did; the environment can supply every key.
CMD ["run"]
