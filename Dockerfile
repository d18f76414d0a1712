# syntax=docker/dockerfile:1
# A static sidecar binary on distroless, running as non-root.
#   docker build -t virtual-keys-sidecar .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sidecar ./cmd/sidecar
# distroless has no shell to mkdir with: make the data dir here, owned by
# distroless's nonroot user (65532), so the image runs as is without a volume.
RUN mkdir -p /out/data && chown 65532:65532 /out/data && chmod 0700 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidecar /sidecar
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Listen on the pod/container address; keep the data dir on a volume.
ENV SIDECAR_GRPC_ADDR=0.0.0.0:9001 \
    SIDECAR_HTTP_ADDR=0.0.0.0:4000 \
    SIDECAR_DATA_DIR=/data
VOLUME /data
EXPOSE 9001 4000
ENTRYPOINT ["/sidecar"]
