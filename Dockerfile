# syntax=docker/dockerfile:1
# A static sidecar binary on distroless, running as non-root.
#   docker build -t virtual-keys-sidecar .
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/sidecar ./cmd/sidecar

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sidecar /sidecar
USER nonroot:nonroot
# Listen on the pod/container address; keep the data dir on a volume.
ENV SIDECAR_GRPC_ADDR=0.0.0.0:9001 \
    SIDECAR_HTTP_ADDR=0.0.0.0:4000 \
    SIDECAR_DATA_DIR=/data
EXPOSE 9001 4000
ENTRYPOINT ["/sidecar"]
