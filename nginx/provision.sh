#!/bin/sh
# Provision a Debian host the way bg expects (used by the Vagrantfile):
# nginx with a site in front of <app>_live, /srv/<app> owned by the deploy user, and
# passwordless `nginx -t` / `nginx -s reload` for that user.
#   provision.sh APP DEPLOY_USER
set -eu
APP=${1:?app name}
USER_NAME=${2:?deploy user}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq nginx-light procps iproute2 >/dev/null
install -d -o "$USER_NAME" -g "$USER_NAME" "/srv/$APP" "/srv/$APP/nginx"

UPSTREAM="/srv/$APP/nginx/$APP.bluegreen.conf"
if [ ! -f "$UPSTREAM" ]; then
  # Until `bg setup`: a placeholder so the site's upstream exists.
  printf 'upstream %s_live { server 127.0.0.1:4001; }\nmap "" $%s_slot { default "none"; }\n' \
    "$APP" "$APP" > "$UPSTREAM"
  chown "$USER_NAME:" "$UPSTREAM"
fi
# The site, from the same template the sandbox uses (nginx/site.conf.j2), without Jinja.
SITE="/etc/nginx/sites-available/$APP"
sed -e "s/{{ app }}/$APP/g" -e "s/{{ listen }}/80 default_server/g" -e '/^#/d' /tmp/bg-site.conf.j2 > "$SITE"
printf 'include /srv/%s/nginx/*.conf;\n' "$APP" > "/etc/nginx/conf.d/$APP-bluegreen-include.conf"
ln -sf "$SITE" "/etc/nginx/sites-enabled/$APP"
rm -f /etc/nginx/sites-enabled/default
cat > "/etc/sudoers.d/bg-$USER_NAME" <<SUDO
$USER_NAME ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -q -t, /usr/sbin/nginx -s reload
SUDO
chmod 440 "/etc/sudoers.d/bg-$USER_NAME"
nginx -t
systemctl reload nginx || systemctl restart nginx
