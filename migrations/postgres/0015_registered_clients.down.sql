ALTER TABLE clients DROP COLUMN registered;
