#!/usr/bin/env ruby
# frozen_string_literal: true
# The original's kind of subscriber, on the original's library (Debian ruby-stomp):
# reads every commit message on /topic/future.git.commits through the fleet's
# three RabbitMQ nodes and prints one line per message: the `subject` header.
#
#   legacy_listener.rb LOGIN PASSCODE_FILE HOST...
#
# Prints `ready` once a probe it sent to the topic came back (so the subscription
# is live on the broker), then `commit\t<subject>` per commit message.
require 'stomp'
require 'timeout'

login, passcode_file, *hosts = ARGV
abort('usage: legacy_listener.rb LOGIN PASSCODE_FILE HOST...') if hosts.empty?
passcode = File.read(passcode_file).lines.first.to_s.strip
topic = '/topic/future.git.commits'
probe = "legacy-listener-probe-#{Process.pid}"
$stdout.sync = true

client = Stomp::Client.new(
  hosts: hosts.map { |h| { login: login, passcode: passcode, host: h, port: 61_613 } },
  reliable: true, max_reconnect_attempts: 0, initial_reconnect_delay: 0.1, max_reconnect_delay: 2.0,
  connect_headers: { 'accept-version' => '1.2', 'host' => '/', 'heart-beat' => '0,0' }
)
ready = Queue.new
client.subscribe(topic, 'id' => 'legacy') do |msg|
  if msg.headers['x-probe'] == probe
    ready << true
  else
    puts "commit\t#{msg.headers['subject']}"
  end
end
# A probe (a keepalive body, which receivers ignore) until one comes back: then
# the subscription is live. Bounded: 60 probes, one per second at most.
60.times do
  client.publish(topic, "\n", 'x-probe' => probe)
  begin
    Timeout.timeout(1) { ready.pop }
    puts 'ready'
    break
  rescue Timeout::Error
    next
  end
end
client.join
