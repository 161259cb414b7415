#!/bin/sh
# Provision a Debian host the way bg expects: the Vagrant VM (from the Vagrantfile) and, with
# this same script, the sandbox host that stands in for the VM in the tests.
# nginx with a site in front of <app>_live, /srv/<app> owned by the deploy user, and
# passwordless `nginx -t` / `nginx -s reload` for that user.
#   provision.sh APP DEPLOY_USER [SITE_TEMPLATE]   (default template: /tmp/bg-site.conf.j2)
set -eu
APP=${1:?app name}
USER_NAME=${2:?deploy user}
TEMPLATE=${3:-/tmp/bg-site.conf.j2}
export DEBIAN_FRONTEND=noninteractive
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
install -d -o "$USER_NAME" -g "$(id -gn "$USER_NAME")" "/srv/$APP" "/srv/$APP/nginx" "/srv/$APP/logs"

UPSTREAM="/srv/$APP/nginx/$APP.bluegreen.conf"
if [ ! -f "$UPSTREAM" ]; then
  # Until `bg setup`: a placeholder so the site's upstream exists.
  printf 'upstream %s_live { server 127.0.0.1:4001; }\nmap "" $%s_slot { default "none"; }\n' \
    "$APP" "$APP" > "$UPSTREAM"
  # The site logs in bg's format (templates/upstream.conf.j2); it must exist before the site.
  printf "log_format %s_bg '%s';\n" "$APP" \
    '$msec\t$status\t$upstream_addr\t$upstream_status\t$remote_addr\t$request' >> "$UPSTREAM"
  chown "$USER_NAME:" "$UPSTREAM"
fi
# The site, from the same template the sandbox uses (nginx/site.conf.j2), without Jinja.
SITE="/etc/nginx/sites-available/$APP"
sed -e "s/{{ app }}/$APP/g" -e "s#{{ access_log }}#/srv/$APP/logs/nginx-access.log#g" -e "s/{{ listen }}/80 default_server/g" -e '/^#/d' "$TEMPLATE" > "$SITE"
printf 'include /srv/%s/nginx/*.conf;\n' "$APP" > "/etc/nginx/conf.d/$APP-bluegreen-include.conf"
ln -sf "$SITE" "/etc/nginx/sites-enabled/$APP"
rm -f /etc/nginx/sites-enabled/default
if [ "$USER_NAME" != root ]; then
  cat > "/etc/sudoers.d/bg-$USER_NAME" <<SUDO
$USER_NAME ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -q -t, /usr/sbin/nginx -s reload
SUDO
  chmod 440 "/etc/sudoers.d/bg-$USER_NAME"
fi
nginx -t
# systemd first (a VM; a sandbox host's stand-in systemctl reloads its own nginx); without a
# working systemctl, signal the running master, or start one.
if systemctl reload nginx 2>/dev/null || systemctl restart nginx 2>/dev/null; then
  :
elif [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  nginx -s reload
else
  nginx
fi
