#!/bin/sh
# Provision a Debian host the way bg expects: the Vagrant VM (from the Vagrantfile) and, with
# this same script, the sandbox hosts that stand in for it in the tests. It adds, and leaves
# the host's own sites alone (never removes one, never adds a second default_server):
# - nginx (installed when missing) with a site in front of <app>_live, answering for the
#   host's own names and IPv4 addresses, localhost and 127.0.0.1 (or SERVER_NAMES); it is
#   nginx's default_server only when no enabled site already is, on port 80;
# - /srv/<app> owned by the deploy user, and an include of its nginx/*.conf in nginx's http {};
# - for a deploy user other than root: sudo, the one rule bg needs, /etc/sudoers.d/bg-<user>
#   (`nginx -t`, `nginx -T`, `nginx -s reload` and the helper below as root, no password), and
#   that helper, /usr/local/sbin/bg-nginx-quit (README: "Deploying as a non-root user").
# A host whose nginx configuration is already invalid is refused before anything changes; if
# nginx rejects the result, the site and include are put back as they were.
#   provision.sh APP DEPLOY_USER [SITE_TEMPLATE [SERVER_NAMES]]
#   (default template: /tmp/bg-site.conf.j2; SERVER_NAMES: space-separated, quoted as one)
set -eu
APP=${1:?app name}
case "$APP" in
  ''|*[!A-Za-z0-9_.-]*|[.-]*)
    echo "provision.sh: app name '$APP' must be letters, digits, '.', '-' and '_'" >&2; exit 2;;
esac
# nginx's names (upstream, variables, log format) take [A-Za-z0-9_] only: bg's nginx_ident.
IDENT=$(printf '%s' "$APP" | tr -c 'A-Za-z0-9_' '_')
USER_NAME=${2:?deploy user}
TEMPLATE=${3:-/tmp/bg-site.conf.j2}
NAMES=${4:-}
export DEBIAN_FRONTEND=noninteractive
case "$NAMES" in *[!A-Za-z0-9.*_\ -]*)
  echo "provision.sh: server names may hold letters, digits, '.', '-', '_', '*' and spaces:" \
    "$NAMES" >&2
  exit 2;;
esac
# Packages only when something is missing: provisioning again needs no network.
need_packages=no
for tool in nginx ps ip; do
  command -v "$tool" >/dev/null 2>&1 || need_packages=yes
done
if [ "$USER_NAME" != root ] && ! command -v sudo >/dev/null 2>&1; then need_packages=yes; fi
if [ "$need_packages" = yes ]; then
  apt-get update -qq
  apt-get install -y -qq nginx-light procps iproute2 sudo >/dev/null
fi
group=$(id -gn "$USER_NAME")
if ! nginx -t >/dev/null 2>&1; then
  echo "provision.sh: nginx's configuration is invalid before provisioning; nothing was" \
    "changed. Fix it first:" >&2
  nginx -t >&2 || :
  exit 1
fi
install -d -o "$USER_NAME" -g "$group" "/srv/$APP" "/srv/$APP/nginx" "/srv/$APP/logs"

UPSTREAM="/srv/$APP/nginx/$APP.bluegreen.conf"
if [ ! -f "$UPSTREAM" ]; then
  # Until `bg setup`: a placeholder so the site's upstream exists.
  printf 'upstream %s_live { server 127.0.0.1:4001; }\nmap "" $%s_slot { default "none"; }\n' \
    "$IDENT" "$IDENT" > "$UPSTREAM"
  # The site logs in bg's format (templates/upstream.conf.j2); it must exist before the site.
  printf "log_format %s_bg '%s';\n" "$IDENT" \
    '$msec\t$status\t$upstream_addr\t$upstream_status\t$remote_addr\t$request' >> "$UPSTREAM"
  chown "$USER_NAME:" "$UPSTREAM"
fi

SITE="/etc/nginx/sites-available/$APP"
ENABLED="/etc/nginx/sites-enabled/$APP"
INCLUDE="/etc/nginx/conf.d/$APP-bluegreen-include.conf"
# Is another enabled server nginx's default on port 80 (IPv4)? Then ours must not be.
other_default=$(nginx -T 2>/dev/null | awk -v own="$ENABLED" '
  /^# configuration file / { f = $4; sub(/:$/, "", f); next }
  f == own { next }
  { line = $0; sub(/#.*/, "", line); n = split(line, w, /[ \t;{}]+/)
    for (i = 1; i < n; i++) if (w[i] == "listen") {
      d = 0
      for (j = i + 2; j <= n && w[j] != "listen"; j++)
        if (w[j] == "default_server" || w[j] == "default") d = 1
      if (d && w[i+1] !~ /^\[/ && (w[i+1] == "80" || w[i+1] ~ /:80$/)) { print f; exit }
    } }')
if [ -n "$other_default" ]; then LISTEN=80; else LISTEN="80 default_server"; fi
if [ -z "$NAMES" ]; then
  # (set -e holds in $( ): a host whose name does not resolve fails `hostname -f`)
  NAMES=$( { hostname || :; hostname -f || :; echo localhost 127.0.0.1; hostname -I || :; } \
    2>/dev/null \
    | tr ' ' '\n' | grep -E '^[A-Za-z0-9][A-Za-z0-9.-]*$' | grep -v ':' | awk '!seen[$0]++' \
    | tr '\n' ' ' | sed 's/ $//')
fi

saved=$(mktemp -d)
trap 'rm -rf "$saved"' EXIT
for f in "$SITE" "$ENABLED" "$INCLUDE"; do
  if [ -e "$f" ] || [ -L "$f" ]; then cp -a "$f" "$saved/$(echo "$f" | tr / _)"; fi
done
restore() {
  for f in "$SITE" "$ENABLED" "$INCLUDE"; do
    rm -f "$f"
    if [ -e "$saved/$(echo "$f" | tr / _)" ] || [ -L "$saved/$(echo "$f" | tr / _)" ]; then
      cp -a "$saved/$(echo "$f" | tr / _)" "$f"
    fi
  done
}
# The site, from the same template the sandbox uses (nginx/site.conf.j2), without Jinja.
sed -e "s/{{ app }}/$IDENT/g" -e "s#{{ access_log }}#/srv/$APP/logs/nginx-access.log#g" -e "s/{{ listen }}/$LISTEN/g" -e "s/{{ server_name }}/$NAMES/g" -e "s/^\([[:space:]]*server_name\)[[:space:]][[:space:]]*_;/\1 $NAMES;/" -e '/^#/d' "$TEMPLATE" > "$SITE"
printf 'include /srv/%s/nginx/*.conf;\n' "$APP" > "$INCLUDE"
ln -sfn "$SITE" "$ENABLED"
if ! nginx -t; then
  restore
  echo "provision.sh: nginx rejected the site for $APP; its files were put back as they were" >&2
  exit 1
fi
if [ -n "$other_default" ]; then
  echo "site $APP: server_name $NAMES (the default server stays $other_default)"
else
  echo "site $APP: server_name $NAMES, and nginx's default server on port 80"
fi

if [ "$USER_NAME" != root ]; then
  # SIGQUIT to nginx's old workers only (they run as www-data): after a reload bg has them
  # stop accepting as soon as a new worker runs, where nginx's master sends the same signal
  # 100 ms later. sudoers cannot restrict kill's pid argument; this can only do what every
  # reload does anyway.
  cat > /usr/local/sbin/bg-nginx-quit.tmp <<'HELPER'
#!/bin/sh
# bg-nginx-quit [--wait MS] PID...: SIGQUIT (graceful shutdown) to the nginx workers PID...
# once their master runs a newer worker, waiting up to MS milliseconds (default 0) for one.
# Each PID must be titled "nginx: worker process" and be a child of one "nginx: master
# process"; the newer worker is another child of it, so titled (past its init, accepting).
# Without one nothing is signalled: never the only workers nginx has. What nginx's master
# does to its old workers 100 ms after a reload, done as soon as the new ones run; installed
# by bluegreen's nginx/provision.sh for the deploy user's sudo rule.
wait_ms=0
if [ "${1:-}" = --wait ]; then wait_ms=${2:-}; shift 2 || exit 2; fi
case "$wait_ms" in ''|*[!0-9]*) echo "bg-nginx-quit: --wait takes milliseconds" >&2; exit 2;; esac
title() { t=; { read -r t < "/proc/$1/cmdline"; } 2>/dev/null; }
master=; old=; status=0
for pid in "$@"; do
  case "$pid" in ''|*[!0-9]*) echo "bg-nginx-quit: not a pid: $pid" >&2; exit 2;; esac
  s=; { read -r s < "/proc/$pid/stat"; } 2>/dev/null
  [ -n "$s" ] || continue  # exited meanwhile
  s=${s##*) }; s=${s#* }; ppid=${s%% *}
  title "$pid"
  case "$t" in
    *"shutting down"*) continue;;
    "nginx: worker process"*) ;;
    *) echo "bg-nginx-quit: $pid is not an nginx worker" >&2; status=1; continue;;
  esac
  title "$ppid"
  case "$t" in
    "nginx: master process"*) ;;
    *) echo "bg-nginx-quit: $pid is not an nginx master's worker" >&2; status=1; continue;;
  esac
  if [ -n "$master" ] && [ "$master" != "$ppid" ]; then
    echo "bg-nginx-quit: workers of two masters" >&2; exit 2
  fi
  master=$ppid; old="$old $pid"
done
[ -n "$old" ] || exit $status
newer=; waited=0
while :; do
  kids=; { read -r kids < "/proc/$master/task/$master/children"; } 2>/dev/null
  for k in $kids; do
    case " $old " in *" $k "*) continue;; esac
    title "$k"
    case "$t" in *"shutting down"*) ;; "nginx: worker process"*) newer=$k; break;; esac
  done
  [ -n "$newer" ] || [ "$waited" -ge "$wait_ms" ] && break
  sleep 0.005; waited=$((waited + 5))
done
if [ -z "$newer" ]; then
  echo "bg-nginx-quit: master $master runs no newer worker: nothing signalled" >&2; exit 3
fi
for pid in $old; do
  title "$pid"
  case "$t" in *"shutting down"*) ;; "nginx: worker process"*) kill -QUIT "$pid" 2>/dev/null;; esac
done
exit $status
HELPER
  chmod 0755 /usr/local/sbin/bg-nginx-quit.tmp
  mv -f /usr/local/sbin/bg-nginx-quit.tmp /usr/local/sbin/bg-nginx-quit
  # The nginx a deploy user's bg finds (PATH, then the sbin directories) is the one allowed.
  NGINX=$(PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin; command -v nginx)
  RULES="/etc/sudoers.d/bg-$(echo "$USER_NAME" | tr -c 'A-Za-z0-9_\n-' _)"
  printf '%s\n' "# bg (bluegreen): what $USER_NAME runs as root on this nginx host, nothing else." \
    "$USER_NAME ALL=(root) NOPASSWD: $NGINX -t, $NGINX -T, $NGINX -s reload, /usr/local/sbin/bg-nginx-quit" \
    > "$RULES.tmp"
  chmod 0440 "$RULES.tmp"
  visudo -c -q -f "$RULES.tmp"
  mv -f "$RULES.tmp" "$RULES"
fi
# systemd first (a VM; a sandbox host's stand-in systemctl reloads its own nginx); without a
# working systemctl, signal the running master, or start one.
if systemctl reload nginx 2>/dev/null || systemctl restart nginx 2>/dev/null; then
  :
elif [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  nginx -s reload
else
  nginx
fi
