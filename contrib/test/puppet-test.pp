# contrib/test-in-root.sh applies this in a Debian 12 root. Facts from the environment:
# FACTER_dk_manage_packages ("true"/"false") and FACTER_dk_ops_key (an ed25519 public key).
# The values match ansible-test.yml and check_toml.py.
class { 'deploykit':
  roles                => ['server', 'hub', 'cli'],
  manage_packages      => $facts['dk_manage_packages'] != 'false',
  manage_services      => false,
  broker_url           => 'failover://(stomp://mq1.example.com:61613,stomp://mq2.example.com:61613)?randomize=false',
  broker_login         => 'ops "deploy" \\ team',
  broker_passcode_file => '/etc/deploykit/passcode',
  wire                 => 'legacy',
  fetch_repos          => {
    'site' => {
      'path'   => '/srv/git/site',
      'mode'   => 'trusting',
      'target' => '/srv/www/site',
      'branch' => 'main',
      'remote' => 'origin',
    },
  },
  fetch_config         => { 'node' => 'web01', 'max_parallel' => 2 },
  agent_trusted_keys   => { 'ops' => $facts['dk_ops_key'] },
  agent_sites          => {
    'site' => {
      'repo'          => '/srv/git/site',
      'releases'      => '/srv/releases/site',
      'current'       => '/srv/www/site-current',
      'hooks'         => '/etc/deploykit/hooks/site',
      'step_timeout'  => '5m',
      'keep_releases' => 5,
      'deploy'        => ['ops'],
    },
  },
  agent_config         => {
    'identity' => 'web01',
    'classes'  => ['web'],
    'facts'    => { 'sitetype' => 'live', 'note' => "a \"b\" \\ c\n[sites.evil]\nrepo = \"/\"" },
  },
  apt_watch_config     => { 'packages' => ['site-*'] },
  web_config           => {
    'sites' => { 'site' => { 'repo' => 'site', 'class' => ['web'], 'deployers' => ['ann'] } },
  },
  keepalive_config     => {
    'target' => [{ 'name' => 'commits', 'destination' => '/topic/deploykit.git.commits' }],
  },
}
