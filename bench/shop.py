"""A rental shop's database, one mysqldump-style file per day (benchmark input).

Built like the public sample schemas hosts meet in real shops and booking
sites, not like gen_fleet's: narrow rows (a rental is ~70 bytes of SQL), a
few wide ones (films), triggers and a view, and every table is data a CMS
profile would keep. One day of activity updates 2% of rentals spread over
the whole table (a different set each day), touches 5% of customers and
appends 1,000 rentals with their payments (older rentals: one in three
has a payment row, as in shops that archive them). Deterministic from the seed.
"""
import random

EPOCH_DAY = 19_000  # 2022-01-08, days since 1970
FIRST = ["MARY", "PATRICIA", "LINDA", "BARBARA", "ELIZABETH", "JENNIFER", "MARIA", "SUSAN", "MARGARET",
         "DOROTHY", "JOHN", "ROBERT", "MICHAEL", "WILLIAM", "DAVID", "RICHARD", "CHARLES", "JOSEPH",
         "THOMAS", "CHRISTOPHER", "DANIEL", "PAUL", "MARK", "DONALD", "GEORGE", "KENNETH", "STEVEN"]
LAST = ["SMITH", "JOHNSON", "WILLIAMS", "JONES", "BROWN", "DAVIS", "MILLER", "WILSON", "MOORE", "TAYLOR",
        "ANDERSON", "THOMAS", "JACKSON", "WHITE", "HARRIS", "MARTIN", "THOMPSON", "GARCIA", "MARTINEZ"]
WORDS = ["Epic", "Astounding", "Fateful", "Beautiful", "Boring", "Stunning", "Touching", "Thoughtful",
         "Drama", "Documentary", "Saga", "Story", "Reflection", "Tale", "Panorama", "of", "a", "the",
         "Dog", "Crocodile", "Mad Scientist", "Hunter", "Woman", "Boat", "Car", "Database Administrator",
         "who", "must", "Find", "Chase", "Outrace", "Battle", "Meet", "in", "Ancient China", "A Shark Tank",
         "The Gulf of Mexico", "A Baloon", "Soviet Georgia", "An Abandoned Mine Shaft", "Nigeria"]
RATINGS = ["G", "PG", "PG-13", "R", "NC-17"]
FEATURES = ["Trailers", "Commentaries", "Deleted Scenes", "Behind the Scenes"]


def stamp(day, seconds):
    """'YYYY-MM-DD HH:MM:SS' of a day number and seconds into it (no time zones)."""
    import datetime
    t = datetime.datetime(1970, 1, 1) + datetime.timedelta(days=EPOCH_DAY + day, seconds=seconds)
    return t.strftime("%Y-%m-%d %H:%M:%S")


class Shop:
    def __init__(self, seed=1, rentals=130_000, customers=6_000, films=1_000):
        self.rd = random.Random(seed)
        rd = self.rd
        self.day = 0
        self.inventory = [(i, 1 + i % films, 1 + i % 2) for i in range(1, films * 4 + 600)]
        self.films = []
        for f in range(1, films + 1):
            title = " ".join(rd.choice(WORDS).upper() for _ in range(2))
            desc = "A " + " ".join(rd.choice(WORDS) for _ in range(rd.randint(10, 16)))
            feats = ",".join(sorted(rd.sample(FEATURES, rd.randint(1, 3))))
            self.films.append([f, title, desc, 2006, 1, rd.randint(3, 7), rd.choice(["0.99", "2.99", "4.99"]),
                               rd.randint(46, 185), f"{rd.randint(9, 29)}.99", rd.choice(RATINGS), feats,
                               stamp(-400, 0)])
        self.customers = []
        for c in range(1, customers + 1):
            fn, ln = rd.choice(FIRST), rd.choice(LAST)
            self.customers.append([c, 1 + c % 2, fn, ln, f"{fn}.{ln}@sakilacustomer.org", c + 4,
                                   1, stamp(-400, rd.randrange(86400)), stamp(-300, rd.randrange(86400))])
        self.rentals, self.payments = [], []
        for r in range(1, rentals + 1):
            self.add_rental(-300 + r * 300 // rentals, paid=r % 3 == 0)

    def add_rental(self, day, paid=True):
        rd = self.rd
        r = len(self.rentals) + 1
        at = rd.randrange(86400)
        cust = rd.randrange(1, len(self.customers) + 1)
        inv = rd.randrange(1, len(self.inventory) + 1)
        staff = rd.randint(1, 2)
        back = stamp(day + rd.randint(1, 9), rd.randrange(86400)) if day < self.day - 9 else None
        self.rentals.append([r, stamp(day, at), inv, cust, back, staff, stamp(day, at)])
        if not paid:
            return
        amount = f"{rd.choice([0, 2, 4, 5, 6, 8, 10])}.99"
        self.payments.append([len(self.payments) + 1, cust, staff, r, amount, stamp(day, at), stamp(day, at)])

    def mutate(self):
        """One day of the shop's life. Returns it as SQL statements (for a
        live server: there, updated rows move in the table's storage)."""
        self.day += 1
        rd, day = self.rd, self.day
        sql_out = ["BEGIN;"]
        for row in rd.sample(self.rentals, len(self.rentals) * 2 // 100):
            row[4] = stamp(day, rd.randrange(86400))
            row[6] = row[4]
            sql_out.append(f"UPDATE rental SET return_date = '{row[4]}', last_update = '{row[6]}' WHERE rental_id = {row[0]};")
        for row in rd.sample(self.customers, len(self.customers) * 5 // 100):
            row[6] = rd.randint(0, 1)
            row[8] = stamp(day, rd.randrange(86400))
            sql_out.append(f"UPDATE customer SET active = {row[6]}, last_update = '{row[8]}' WHERE customer_id = {row[0]};")
        rentals, payments = len(self.rentals), len(self.payments)
        for _ in range(1000):
            self.add_rental(day)
        for r in self.rentals[rentals:]:
            sql_out.append(f"INSERT INTO rental VALUES ({','.join(sql(v) for v in r)});")
        for p in self.payments[payments:]:
            sql_out.append(f"INSERT INTO payment VALUES ({','.join(sql(v) for v in p)});")
        sql_out.append("COMMIT;")
        return "\n".join(sql_out) + "\n"

    def write_pg(self, path):
        """The shop as PostgreSQL DDL and COPY data, to load a server once."""
        with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
            f.write(PG_SCHEMA)
            for name, rows in (("customer", self.customers), ("film", self.films), ("inventory", self.inventory),
                               ("payment", self.payments), ("rental", self.rentals)):
                f.write(f"COPY {name} FROM stdin;\n")
                for row in rows:
                    f.write("\t".join("\\N" if v is None else str(v) for v in row) + "\n")
                f.write("\\.\n")
            f.write(PG_TAIL)

    def write(self, path, net_buffer=1 << 20):
        with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
            f.write("-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
                    "-- Host: localhost    Database: shop\n-- ------------------------------------------------------\n"
                    "-- Server version\t10.11.6-MariaDB-0+deb12u1\n\n"
                    "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n/*!40101 SET NAMES utf8mb4 */;\n"
                    "/*!40103 SET @OLD_TIME_ZONE=@@TIME_ZONE */;\n/*!40103 SET TIME_ZONE='+00:00' */;\n"
                    "/*!40014 SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0 */;\n\n")
            for name, create, rows in (
                ("customer", CUSTOMER, self.customers), ("film", FILM, self.films),
                ("inventory", INVENTORY, self.inventory), ("payment", PAYMENT, self.payments),
                ("rental", RENTAL, self.rentals),
            ):
                f.write(f"--\n-- Table structure for table `{name}`\n--\n\nDROP TABLE IF EXISTS `{name}`;\n"
                        f"CREATE TABLE `{name}` (\n{create}\n) ENGINE=InnoDB AUTO_INCREMENT={len(rows) + 1} "
                        "DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci;\n\n"
                        f"--\n-- Dumping data for table `{name}`\n--\n\nLOCK TABLES `{name}` WRITE;\n"
                        f"/*!40000 ALTER TABLE `{name}` DISABLE KEYS */;\n")
                prefix = f"INSERT INTO `{name}` VALUES "
                cur, curlen = [], len(prefix)
                for row in rows:
                    t = "(" + ",".join(sql(v) for v in row) + ")"
                    if cur and curlen + len(t) + 1 > net_buffer:
                        f.write(prefix + ",".join(cur) + ";\n")
                        cur, curlen = [], len(prefix)
                    cur.append(t)
                    curlen += len(t) + 1
                if cur:
                    f.write(prefix + ",".join(cur) + ";\n")
                f.write(f"/*!40000 ALTER TABLE `{name}` ENABLE KEYS */;\nUNLOCK TABLES;\n")
                if name == "rental":
                    f.write(TRIGGER)
            f.write(VIEW)
            f.write("/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n/*!40014 SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS */;\n"
                    f"\n-- Dump completed on {stamp(self.day, 3 * 3600)}\n")


def sql(v):
    if v is None:
        return "NULL"
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


CUSTOMER = """  `customer_id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `store_id` tinyint(3) unsigned NOT NULL,
  `first_name` varchar(45) NOT NULL,
  `last_name` varchar(45) NOT NULL,
  `email` varchar(50) DEFAULT NULL,
  `address_id` smallint(5) unsigned NOT NULL,
  `active` tinyint(1) NOT NULL DEFAULT 1,
  `create_date` datetime NOT NULL,
  `last_update` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`customer_id`),
  KEY `idx_last_name` (`last_name`)"""
FILM = """  `film_id` smallint(5) unsigned NOT NULL AUTO_INCREMENT,
  `title` varchar(128) NOT NULL,
  `description` text DEFAULT NULL,
  `release_year` year(4) DEFAULT NULL,
  `language_id` tinyint(3) unsigned NOT NULL,
  `rental_duration` tinyint(3) unsigned NOT NULL DEFAULT 3,
  `rental_rate` decimal(4,2) NOT NULL DEFAULT 4.99,
  `length` smallint(5) unsigned DEFAULT NULL,
  `replacement_cost` decimal(5,2) NOT NULL DEFAULT 19.99,
  `rating` enum('G','PG','PG-13','R','NC-17') DEFAULT 'G',
  `special_features` set('Trailers','Commentaries','Deleted Scenes','Behind the Scenes') DEFAULT NULL,
  `last_update` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`film_id`),
  KEY `idx_title` (`title`)"""
INVENTORY = """  `inventory_id` mediumint(8) unsigned NOT NULL AUTO_INCREMENT,
  `film_id` smallint(5) unsigned NOT NULL,
  `store_id` tinyint(3) unsigned NOT NULL,
  PRIMARY KEY (`inventory_id`),
  KEY `idx_fk_film_id` (`film_id`)"""
PAYMENT = """  `payment_id` int(10) unsigned NOT NULL AUTO_INCREMENT,
  `customer_id` smallint(5) unsigned NOT NULL,
  `staff_id` tinyint(3) unsigned NOT NULL,
  `rental_id` int(11) DEFAULT NULL,
  `amount` decimal(5,2) NOT NULL,
  `payment_date` datetime NOT NULL,
  `last_update` timestamp NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`payment_id`),
  KEY `fk_payment_rental` (`rental_id`)"""
RENTAL = """  `rental_id` int(11) NOT NULL AUTO_INCREMENT,
  `rental_date` datetime NOT NULL,
  `inventory_id` mediumint(8) unsigned NOT NULL,
  `customer_id` smallint(5) unsigned NOT NULL,
  `return_date` datetime DEFAULT NULL,
  `staff_id` tinyint(3) unsigned NOT NULL,
  `last_update` timestamp NOT NULL DEFAULT current_timestamp() ON UPDATE current_timestamp(),
  PRIMARY KEY (`rental_id`),
  UNIQUE KEY `rental_date` (`rental_date`,`inventory_id`,`customer_id`)"""
TRIGGER = """/*!50003 SET @saved_sql_mode = @@sql_mode */ ;
DELIMITER ;;
/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER `rental_date` BEFORE INSERT ON `rental` FOR EACH ROW SET NEW.rental_date = NOW() */;;
DELIMITER ;
/*!50003 SET sql_mode = @saved_sql_mode */ ;
"""
VIEW = """
--
-- Final view structure for view `customer_list`
--

/*!50001 DROP VIEW IF EXISTS `customer_list`*/;
/*!50001 CREATE ALGORITHM=UNDEFINED */
/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */
/*!50001 VIEW `customer_list` AS select `cu`.`customer_id` AS `ID`,concat(`cu`.`first_name`,' ',`cu`.`last_name`) AS `name`,`cu`.`active` AS `active` from `customer` `cu` */;
"""

PG_SCHEMA = """CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');
CREATE TABLE customer (customer_id serial PRIMARY KEY, store_id smallint NOT NULL, first_name text NOT NULL,
  last_name text NOT NULL, email text, address_id smallint NOT NULL, active integer NOT NULL DEFAULT 1,
  create_date timestamp NOT NULL, last_update timestamp DEFAULT now());
CREATE TABLE film (film_id serial PRIMARY KEY, title text NOT NULL, description text, release_year integer,
  language_id smallint NOT NULL, rental_duration smallint NOT NULL DEFAULT 3, rental_rate numeric(4,2) NOT NULL,
  length smallint, replacement_cost numeric(5,2) NOT NULL, rating mpaa_rating, special_features text,
  last_update timestamp NOT NULL DEFAULT now());
CREATE TABLE inventory (inventory_id serial PRIMARY KEY, film_id smallint NOT NULL, store_id smallint NOT NULL);
CREATE TABLE payment (payment_id serial PRIMARY KEY, customer_id smallint NOT NULL, staff_id smallint NOT NULL,
  rental_id integer, amount numeric(5,2) NOT NULL, payment_date timestamp NOT NULL, last_update timestamp);
CREATE TABLE rental (rental_id serial PRIMARY KEY, rental_date timestamp NOT NULL, inventory_id integer NOT NULL,
  customer_id smallint NOT NULL, return_date timestamp, staff_id smallint NOT NULL,
  last_update timestamp NOT NULL DEFAULT now());
"""
PG_TAIL = """CREATE INDEX idx_last_name ON customer (last_name);
CREATE INDEX fk_payment_rental ON payment (rental_id);
CREATE UNIQUE INDEX rental_date ON rental (rental_date, inventory_id, customer_id);
CREATE FUNCTION last_updated() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.last_update = now(); RETURN NEW; END $$;
CREATE TRIGGER rental_date BEFORE INSERT ON rental FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE VIEW customer_list AS SELECT customer_id AS id, first_name || ' ' || last_name AS name, active FROM customer;
"""
