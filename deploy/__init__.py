"""The pod as containers (docker-compose.yml, deploy/compose/) and on Kubernetes (deploy/k8s/),
and the modules that render their generated files."""
