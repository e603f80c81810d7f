# portcullis: the gateway's container image.
#
#   docker build -t portcullis .
#   docker run -p 8080:8080 -p 127.0.0.1:9090:9090 \
#     -v "$PWD/my.config.json:/etc/portcullis/gateway.config.json:ro" \
#     -e JWT_SECRET -e ADMIN_TOKEN portcullis
#
# Config and secrets come in at run time: mount your gateway.config.json over
# /etc/portcullis/gateway.config.json (or point PORTCULLIS_CONFIG / --config elsewhere) and pass secrets
# as environment variables that the config names with ${NAME}. The bundled default config holds no secret:
# it reads JWT_SECRET, ADMIN_TOKEN and UPSTREAM_URL from the environment and refuses to start without
# them. docs/deploy.md has the rest (compose, Kubernetes).

# Build stage: compile TypeScript with the dev dependencies; nothing of it ships but dist/.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies and dist/ only.
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    ADMIN_HOST=0.0.0.0 \
    PORTCULLIS_CONFIG=/etc/portcullis/gateway.config.json
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY gateway.schema.json ./
# The default config (secrets from the environment, no secret in it); mount your own over it.
COPY gateway.config.json /etc/portcullis/gateway.config.json
# The base image's unprivileged "node" user, by number so that Kubernetes' runAsNonRoot can verify it.
# Everything above belongs to root (readable, not writable, by 1000): the process cannot rewrite its own
# code, and it needs no writable path (it logs to stdout), so a read-only root filesystem works.
USER 1000:1000
# 8080: WebSocket clients (listen.port); 9090: the admin listener (admin.port: /healthz, /readyz, ...).
EXPOSE 8080 9090
# SIGTERM drains (readyz 503, new upgrades 503, close 1001, up to drain.timeoutMs) and exits 0: give the
# container more than drain.timeoutMs to stop (docker run --stop-timeout 40, compose stop_grace_period).
STOPSIGNAL SIGTERM
# The image has no curl: Node's own fetch asks the admin /healthz (no token needed). With an admin port
# other than 9090 in your config, set ADMIN_PORT to it; without an admin section the check fails.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.ADMIN_PORT||9090)+'/healthz',{signal:AbortSignal.timeout(2500)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/cli.js"]
