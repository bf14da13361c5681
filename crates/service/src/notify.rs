//! Telling the service manager how a service is doing (systemd's `Type=notify`): ready once
//! it serves, stopping when it leaves. Without a manager (`NOTIFY_SOCKET` unset) these do
//! nothing, so a service started by hand or by a test is not affected.

/// The service is up and serving; `status` is the one-line state `systemctl status` shows.
pub fn ready(status: &str) {
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// The service is shutting down (a graceful leave may take a few seconds).
pub fn stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

fn send(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        // The manager asked to be told (NOTIFY_SOCKET is set) and could not be: it will
        // time the service out, so say why.
        eprintln!("warning: cannot notify the service manager: {e}");
    }
}
