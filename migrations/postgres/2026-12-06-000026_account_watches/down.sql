DROP TABLE account_watch_rooms;
DROP TABLE account_watches;
