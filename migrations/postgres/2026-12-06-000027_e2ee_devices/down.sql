ALTER TABLE messages DROP COLUMN sender_trust;
DROP TABLE e2ee_device_items;
DROP TABLE e2ee_devices;
