-- As SQLite's 0021: links_calendar_ends cost a randomly placed index write per link written,
-- for one query per windowed full sync, which walks the calendar's links in links_event.
DROP INDEX links_calendar_ends;
