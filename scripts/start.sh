#!/usr/bin/env bash
# npm start: install if needed, build the app (with its demo models), serve it.
source "$(dirname "$0")/env.sh"
npm run build:app
exec npx vite preview --port "${PORT:-4173}" --strictPort
