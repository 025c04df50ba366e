// A booking's status, exactly as the engine has them (engine/records.py, BookingStatus):
// booked (it can still be moved or cancelled), cancelled, no_show (the patient did not come).
// tests/server/test_static_statuses.py keeps this list and the page texts equal to the engine's.

export const BOOKED = "booked";
export const CANCELLED = "cancelled";
export const NO_SHOW = "no_show";
export const BOOKING_STATUSES = [BOOKED, CANCELLED, NO_SHOW];
